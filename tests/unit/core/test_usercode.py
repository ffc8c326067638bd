"""Bring your own model: where a user module may be found (core/usercode.py), in process."""

import pytest

from core.errors import UserError
from entrypoint.trials import usermodule


@pytest.mark.unit
def test_module_name_hyperparameter_is_validated():
    from hpo_study import settings

    with pytest.raises(UserError, match="'model-module' must be a Python module name"):
        settings.parse({"model-module": "../evil"})


@pytest.mark.unit
def test_a_module_found_outside_the_source_folder_is_refused(tmp_path):
    elsewhere, source = tmp_path / "elsewhere", tmp_path / "source"
    for folder in (elsewhere, source):
        folder.mkdir()
        (folder / "byo_clash.py").write_text(
            "def suggest_params(trial):\n    return {}\n\ndef build_network(p, f, c):\n    return None\n"
        )
    spec = usermodule.load("byo_clash", elsewhere)  # first on the path, as an installed module would be
    usermodule.check_origin(spec, elsewhere)
    with pytest.raises(
        UserError, match="'byo_clash' was imported from .*elsewhere, not from the source folder"
    ):
        usermodule.check_origin(usermodule.load("byo_clash", source), source)
