"""How the SageMaker SDKs lay out a job, run in the image."""

import pytest


@pytest.mark.container
def test_the_image_reads_a_broken_hyperparameters_file_itself(engine, image, job_dir):
    """Not the toolkit's `train`, which parsed the file first and failed with a traceback."""
    base = job_dir()
    (base / "input" / "config" / "hyperparameters.json").write_text('{"n-trials": "3",}')
    result = engine.run_container("--network=none", "-v", f"{base}:/opt/ml", image, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(
        "The hyperparameters file /opt/ml/input/config/hyperparameters.json is not valid JSON"
    )
    assert "Traceback" not in result.stdout + result.stderr
