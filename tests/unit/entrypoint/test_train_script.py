"""The `train` on PATH is this project's, not the training toolkit's."""

import pytest

from tests.support.jobs import VENV_BIN


@pytest.mark.unit
def test_train_on_path_is_ours_not_the_toolkits():
    """Both sagemaker-training and this project install a `train` script; ours must win."""
    assert "from entrypoint.cli import main" in (VENV_BIN / "train").read_text()
