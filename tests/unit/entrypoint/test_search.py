"""The job seed (entrypoint/job/context.py): jobs with the same base seed explore differently."""

import pytest


@pytest.mark.unit
def test_jobs_with_the_same_base_seed_explore_differently():
    from entrypoint.job.context import job_seed

    assert job_seed(1, "job-a") != job_seed(1, "job-b")
    assert job_seed(1, "job-a") == job_seed(1, "job-a") and job_seed(None, "job-a") is None
