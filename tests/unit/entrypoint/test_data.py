from __future__ import annotations

import io
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from core.errors import UserError
from entrypoint.trials import data
from tests.support.errors import one_line
from tests.support.jobs import (
    npz,
)

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


# --- bad data files get one line, and nothing is decompressed or allocated first ----------


@pytest.mark.unit
def test_a_file_that_is_not_npz_is_named(tmp_path):
    (tmp_path / "a.npz").write_text("x,y\n1,2\n")
    with pytest.raises(UserError) as info:
        data.load_channel("train", tmp_path)
    assert "a.npz: not a readable .npz file (not a zip archive)" in one_line(info)


@pytest.mark.unit
def test_a_npy_file_named_npz_is_named(tmp_path):
    np.save(tmp_path / "b.npy", np.zeros((3, 2)))
    (tmp_path / "b.npy").rename(tmp_path / "b.npz")
    with pytest.raises(UserError) as info:
        data.load_channel("train", tmp_path)
    assert "b.npz" in one_line(info) and ".npy" in str(info.value)


def npy_bytes(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """A .npy member; ``shape`` overrides what its header claims."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False}
    header["shape"] = shape or array.shape
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(array.tobytes())
    return buffer.getvalue()


@pytest.mark.unit
def test_a_header_claiming_an_enormous_shape_is_refused_without_allocating(tmp_path):
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as z:
        z.writestr("x.npy", npy_bytes(np.zeros((4, 2), np.float32), shape=(10**7, 10**6)))
        z.writestr("y.npy", npy_bytes(np.zeros(4, np.int64)))
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as info:
            data.load_channel("train", tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "c.npz" in one_line(info) and "(10000000, 1000000)" in str(info.value)
    assert peak < 20 * 2**20


@pytest.mark.unit
def test_members_without_the_npy_suffix_are_read_as_numpy_load_reads_them(tmp_path):
    with zipfile.ZipFile(tmp_path / "plain.npz", "w") as z:
        z.writestr("x", npy_bytes(np.ones((3, 2), np.float64)))
        z.writestr("y", npy_bytes(np.array([0, 1, 1])))
    split = data.load_channel("train", tmp_path)
    assert split.x.shape == (3, 2) and split.x.dtype == np.float32 and split.y.tolist() == [0, 1, 1]


@pytest.mark.unit
def test_a_zip_bomb_is_refused_before_decompressing(tmp_path):
    declared = 256 * 2**20
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as member:
            header = {"descr": "<f4", "fortran_order": False, "shape": (declared // 4 // 64, 64)}
            np.lib.format.write_array_header_1_0(member, header)
            zeros = bytes(2**20)
            for _ in range(declared // len(zeros)):
                member.write(zeros)
        z.writestr("y.npy", npy_bytes(np.zeros(declared // 4 // 64, np.int8)))
    assert (tmp_path / "bomb.npz").stat().st_size < 2 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as info:
            data.load({"train": str(tmp_path), "test": str(tmp_path)}, max_bytes=64 * 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bomb.npz" in one_line(info) and "64 MiB" in str(info.value)
    assert peak < 20 * 2**20


@pytest.mark.unit
def test_the_default_data_limit_fits_the_machine():
    assert 2**20 < data.memory_budget() < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.unit
def test_data_without_feature_columns_is_refused(tmp_path):
    npz(tmp_path / "d.npz", x=np.zeros((5, 0)), y=np.arange(5))
    with pytest.raises(UserError) as info:
        data.load_channel("train", tmp_path)
    assert "d.npz" in one_line(info) and "no feature columns" in str(info.value)
