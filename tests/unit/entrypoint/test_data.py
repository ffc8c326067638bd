import numpy as np
import pytest

from core.errors import UserError
from entrypoint import data
from tests.support.jobs import npz

pytestmark = pytest.mark.unit


def channels(tmp_path):
    return {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")}


def test_loads_and_concatenates_files_in_name_order(tmp_path):
    npz(tmp_path / "train" / "a.npz", x=np.zeros((3, 2, 2)), y=np.array([0, 1, 2]))
    npz(tmp_path / "train" / "b.npz", X=np.ones((2, 4)), labels=np.array([3.0, 1.0]))
    npz(tmp_path / "test" / "t.npz", features=np.ones((2, 4), dtype=np.uint8), Y=np.array([0, 4]))
    ds = data.load(channels(tmp_path))
    assert ds.train.x.shape == (5, 4) and ds.train.x.dtype == np.float32
    assert ds.train.y.tolist() == [0, 1, 2, 3, 1] and ds.train.y.dtype == np.int32
    assert (ds.n_features, ds.n_classes) == (4, 5)


@pytest.mark.parametrize(
    "train, fragment",
    [
        ({"x": np.zeros((0, 4)), "y": np.zeros(0, dtype=int)}, "feature array is empty"),
        ({"x": np.zeros((3, 4)), "y": np.array([0, 1])}, "3 feature rows but labels of shape (2,)"),
        ({"x": np.array([[0.0, np.nan]]), "y": np.array([0])}, "NaN or infinite"),
        ({"x": np.array([[0.0, np.inf]]), "y": np.array([0])}, "NaN or infinite"),
        ({"x": np.zeros((2, 4)), "y": np.array([0.5, 1.0])}, "labels must be integers"),
        ({"x": np.zeros((2, 4)), "y": np.array([-1, 1])}, "class indices from 0 to 99999 (found -1..1)"),
        ({"x": np.zeros((2, 4)), "y": np.array([0, 2**31])}, "(found 0..2147483648)"),
        ({"x": np.zeros((1, 4)), "y": np.array(3)}, "1 feature rows but labels of shape ()"),
        ({"x": np.array([["a", "b"]]), "y": np.array([0])}, "features must be numeric"),
        (
            {"features_typo": np.zeros((2, 4)), "y": np.array([0, 1])},
            "no feature array (expected one of x, X, features; found features_typo, y)",
        ),
        ({"x": np.zeros((2, 4))}, "no label array"),
    ],
)
def test_bad_files_give_a_clear_error_naming_the_file(tmp_path, train, fragment):
    npz(tmp_path / "train" / "bad.npz", **train)
    npz(tmp_path / "test" / "ok.npz", x=np.zeros((2, 4)), y=np.array([0, 1]))
    with pytest.raises(UserError) as info:
        data.load(channels(tmp_path))
    assert fragment in str(info.value) and "bad.npz" in str(info.value)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    npz(tmp_path / "train" / "evil.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(UserError, match="not a readable .npz file"):
        data.load_channel("train", tmp_path / "train")


def test_corrupt_file(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="broken.npz: not a readable .npz file"):
        data.load_channel("train", tmp_path / "train")


def test_missing_and_empty_channels(tmp_path):
    with pytest.raises(UserError, match="Missing channel 'train'"):
        data.load({})
    (tmp_path / "train").mkdir()
    with pytest.raises(UserError, match="Channel 'train' .* holds no .npz file"):
        data.load(channels(tmp_path))


def test_width_mismatch_between_channels_and_files(tmp_path):
    npz(tmp_path / "train" / "a.npz", x=np.zeros((2, 4)), y=np.array([0, 1]))
    npz(tmp_path / "test" / "a.npz", x=np.zeros((2, 5)), y=np.array([0, 1]))
    with pytest.raises(UserError, match="differ in feature width \\(4 vs 5\\)"):
        data.load(channels(tmp_path))
    npz(tmp_path / "test" / "b.npz", x=np.zeros((2, 4)), y=np.array([0, 1]))
    with pytest.raises(UserError, match="different feature widths \\[4, 5\\]"):
        data.load(channels(tmp_path))


def test_single_class_is_refused(tmp_path):
    npz(tmp_path / "train" / "a.npz", x=np.zeros((2, 4)), y=np.array([0, 0]))
    npz(tmp_path / "test" / "a.npz", x=np.zeros((2, 4)), y=np.array([0, 0]))
    with pytest.raises(UserError, match="single class"):
        data.load(channels(tmp_path))
