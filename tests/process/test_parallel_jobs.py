"""Many real `train` processes on one study in the real MariaDB, with the password served by a
moto Secrets Manager over HTTP."""

import json
import threading

import pytest
from optuna.trial import TrialState

from tests.support import services
from tests.support.jobs import (
    FINISHED,
    finish,
    kill_a_job_mid_trial,
    start_job,
    study_of,
    wait_for_heartbeat_to_lapse,
)


@pytest.mark.process
@pytest.mark.parametrize("round_", range(3))
def test_six_jobs_start_together_on_an_empty_database(shared_job, mysql_db, moto_endpoint, round_):
    jobs = [
        start_job(shared_job(f"job-{i}", **{"n-trials": "2"}), f"job-{i}", moto_endpoint) for i in range(6)
    ]
    results = [finish(p) for p in jobs]
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    study = study_of(mysql_db)
    trials = study.get_trials(states=FINISHED)
    assert len(trials) == 12 and len(study.trials) == 12
    assert {t.user_attrs["job_name"] for t in trials} == {f"job-{i}" for i in range(6)}
    points = {json.dumps(t.params, sort_keys=True) for t in trials}
    assert len(points) == 12, "two jobs sampled the same point"


@pytest.mark.process
def test_study_wide_cap_stops_every_job(shared_job, mysql_db, moto_endpoint):
    for name in ("cap-a", "cap-b"):
        rc, _, err = finish(
            start_job(shared_job(name, **{"n-trials": "5", "max-trials": "3"}), name, moto_endpoint)
        )
        assert rc == 0, err[-2000:]
    assert len(study_of(mysql_db).get_trials(states=FINISHED)) == 3


@pytest.mark.process
def test_trial_of_a_killed_job_is_failed_by_heartbeat_and_rerun(shared_job, mysql_db, moto_endpoint):
    beat = {"heartbeat-interval": "1", "heartbeat-grace-period": "3"}
    kill_a_job_mid_trial(shared_job, mysql_db, moto_endpoint, beat)
    lost = study_of(mysql_db).trials[0]
    wait_for_heartbeat_to_lapse(mysql_db, lost, grace_s=3)  # past the grace period
    rc, _, err = finish(
        start_job(shared_job("survivor", **{"n-trials": "2", **beat}), "survivor", moto_endpoint)
    )
    assert rc == 0, err[-2000:]
    trials = study_of(mysql_db).trials
    assert trials[0].state == TrialState.FAIL
    rerun = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert len(rerun) == 1 and rerun[0].state in FINISHED and rerun[0].params == lost.params
    assert rerun[0].user_attrs["job_name"] == "survivor"
    assert len([t for t in trials if t.state in FINISHED]) == 2


def scan_for_secret(password, *texts):
    fragments = [password] + [part for part in password.split() if len(part) >= 5]
    for text in texts:
        for fragment in fragments:
            assert fragment not in text


def everything_written(base):
    texts = []
    for path in base.rglob("*"):
        if path.is_file() and path.suffix not in (".npz",) and "input" not in path.parts:
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return texts


@pytest.mark.process
def test_password_never_leaks(shared_job, mysql_db, moto_endpoint, aws):
    base = shared_job("clean", **{"n-trials": "2"})
    rc, out, err = finish(start_job(base, "clean", moto_endpoint))
    assert rc == 0, err[-2000:]
    study = study_of(mysql_db)
    system = study._storage.get_study_system_attrs(study._study_id)
    attrs = json.dumps(
        [study.user_attrs, system] + [[t.user_attrs, t.system_attrs] for t in study.trials], default=str
    )
    scan_for_secret(mysql_db.password, out, err, attrs, *everything_written(base))
    # A job that fails after reading the secret (the user has no rights on that database).
    denied = shared_job("denied", **{"n-trials": "1", "db-name": "mysql", "db-retry-timeout": "2"})
    rc, out, err = finish(start_job(denied, "denied", moto_endpoint))
    assert rc == 1
    failure = (denied / "output" / "failure").read_text()
    assert "Cannot open the study" in failure and "Access denied" in failure
    scan_for_secret(mysql_db.password, out, err, *everything_written(denied))


@pytest.mark.process
@pytest.mark.parametrize(
    "secret, fragment",
    [
        (None, "Secret 'missing/secret' does not exist in this region"),
        ("not json", "is not JSON"),
        ({"username": "u"}, "lacks 'password'"),
    ],
)
def test_credential_failures_end_the_job_clearly(shared_job, moto_endpoint, aws, secret, fragment):
    name = "missing/secret" if secret is None else aws(secret)
    base = shared_job("bad-secret", secret_name=name, **{"n-trials": "1"})
    rc, _, err = finish(start_job(base, "bad-secret", moto_endpoint))
    assert rc == 1
    failure = (base / "output" / "failure").read_text()
    assert fragment in failure and "Traceback" not in failure, failure


@pytest.mark.process
def test_job_waits_for_a_database_that_comes_back(
    private_mariadb, private_db, shared_job, moto_endpoint, aws
):
    secret = aws({"username": private_db.user, "password": private_db.password})
    base = shared_job(
        "patient", db=private_db, secret_name=secret, **{"n-trials": "1", "db-retry-timeout": "90"}
    )
    private_mariadb.stop()
    lines: list[str] = []
    try:
        proc = start_job(base, "patient", moto_endpoint)
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        services.wait_for(
            lambda: any("Database unavailable while opening the study" in x for x in lines), 120, "a retry"
        )
        assert proc.poll() is None, "the job gave up instead of waiting"
    finally:
        private_mariadb.start()
    rc = proc.wait(timeout=300)
    reader.join(timeout=10)
    assert rc == 0, "".join(lines)[-2000:]


@pytest.mark.process
def test_database_away_past_the_limit_fails_clearly(
    private_mariadb, private_db, shared_job, moto_endpoint, aws
):
    secret = aws({"username": private_db.user, "password": private_db.password})
    base = shared_job(
        "impatient", db=private_db, secret_name=secret, **{"n-trials": "1", "db-retry-timeout": "3"}
    )
    private_mariadb.stop()
    try:
        rc, _, _ = finish(start_job(base, "impatient", moto_endpoint))
    finally:
        private_mariadb.start()
    assert rc == 1
    failure = (base / "output" / "failure").read_text()
    assert "Cannot open the study" in failure and "Can't connect" in failure
