"""Hardening (issue 15): no false success, one clear line for every bad input, bounded retries,
no trial left RUNNING. Fast in-process tests first, then the real `train` command on full and
read-only folders (small tmpfs mounts, as root), then jobs on a real MariaDB."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import time
import tracemalloc
import zipfile

import mysql.connector
import numpy as np
import pytest
import sqlalchemy
from optuna.trial import TrialState

from core.errors import UserError
from entrypoint import data, dberrors, failure, storage
from entrypoint import settings as settings_mod
from entrypoint.checkpoint import Progress
from entrypoint.dberrors import describe
from tests.support import services
from tests.support.jobs import (
    FINISHED,
    finish,
    job_on_private_db,
    npz,
    run_train,
    start_job,
    study_of,
    tmpfs,
    wait_for_a_beating_trial,
)
from tests.support.moto_setup import use_moto

# --- item 8: bad data files get one line, and nothing is decompressed or allocated first ----------


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


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


# --- item 8: messages carry the cause, not only an exception class -------------------------------


@pytest.mark.unit
def test_describe_carries_the_cause_of_sqlite_and_os_errors(tmp_path):
    (tmp_path / "ro").mkdir()
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(sqlalchemy.exc.OperationalError) as info:
        engine.connect()
    assert "unable to open database file" in describe(info.value)
    assert describe(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"


@pytest.mark.services
def test_a_binary_secret_is_said_to_be_binary(moto_endpoint, monkeypatch):
    import boto3

    from entrypoint import credentials

    use_moto(monkeypatch, moto_endpoint)
    client = boto3.client("secretsmanager", region_name=services.REGION)
    client.create_secret(Name="test/bin-secret", SecretBinary=b"\x00\x01s3cr3t")
    with pytest.raises(UserError) as info:
        credentials.fetch("test/bin-secret", services.REGION)
    assert "binary" in one_line(info) and "s3cr3t" not in str(info.value)


# --- item 6: a password in the storage URL's query string -----------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("key", ["password", "PASSWORD", "passwd", "PassWd", "pwd"])
def test_a_password_in_the_query_string_is_refused_without_echo(key):
    url = f"mysql://u@h/db?charset=utf8&{key}=s3cr3t"
    with pytest.raises(UserError) as info:
        storage.resolve(settings_mod.parse({"storage": url}), "/x")
    assert "must not contain a password" in one_line(info) and "s3cr3t" not in str(info.value)


@pytest.mark.unit
def test_query_values_are_masked_when_a_url_is_shown():
    db = storage.resolve(settings_mod.parse({"storage": "mysql://u@h/db?ssl_key=/k/secret.pem"}), "/x")
    assert "secret.pem" not in db.shown and "ssl_key=" in db.shown and "u@h" in db.shown


# --- item 7: checkpoint restore -------------------------------------------------------------------


def checkpoint_with_model(tmp_path, weights_file):
    folder = tmp_path / "checkpoints"
    (folder / "model").mkdir(parents=True)
    (tmp_path / "outside.npz").write_bytes(b"weights")  # what ../ points at
    meta = {"weights_file": weights_file, "job_name": "j", "study_name": "s", "trial_number": 0}
    (folder / "model" / "model.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.unit
@pytest.mark.parametrize("weights", ["../../outside.npz", "/etc/hostname", "", 7])
def test_restore_refuses_a_weights_file_that_is_not_a_name_in_the_folder(tmp_path, weights, caplog):
    folder = checkpoint_with_model(tmp_path, weights)
    model_dir = tmp_path / "deep" / "model"
    before = sorted(p for p in tmp_path.rglob("*"))
    assert Progress(folder, "s", "j").restore_model(model_dir) is False
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == [p for p in before if p.is_file()]
    assert "not a file name" in caplog.text


@pytest.mark.unit
@pytest.mark.parametrize(
    "doc",
    [
        [1, 2],
        "text",
        {"study_name": "s", "job_name": "j", "finished_trials": {"a": 1}},
        {"study_name": "s", "job_name": "j", "finished_trials": ["x"]},
    ],
)
def test_a_malformed_progress_file_is_ignored_with_a_warning(tmp_path, doc, caplog):
    (tmp_path / "progress.json").write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        assert Progress(tmp_path, "s", "j").finished == []
    assert "Ignoring malformed checkpoint" in caplog.text


# --- item 9: one deadline per outage, every sleep capped to what is left ---------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        self.now += seconds
        return False  # threading.Event.wait's answer: not stopped


def lost_connection():
    raise mysql.connector.errors.OperationalError(msg="Lost connection", errno=2013)


@pytest.mark.unit
def test_one_deadline_is_shared_by_every_call_of_an_outage():
    clock = FakeClock()
    retry = dberrors.Retrier(10.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(mysql.connector.Error):
        retry(lost_connection, "first call")
    assert clock.now - 1000.0 == pytest.approx(10.0)  # the last sleep ends exactly at the deadline
    assert max(clock.slept) <= 10.0
    clock.slept.clear()
    with pytest.raises(mysql.connector.Error):  # the clean-up call: same outage, no time left
        retry(lost_connection, "clean-up")
    assert clock.slept == [] and clock.now - 1000.0 == pytest.approx(10.0)
    assert retry(lambda: 42, "after the outage") == 42  # a success ends the outage
    with pytest.raises(mysql.connector.Error):
        retry(lost_connection, "a new outage")
    assert clock.now - 1000.0 == pytest.approx(20.0)


@pytest.mark.unit
def test_a_limit_shorter_than_the_outage_deadline_caps_a_call():
    clock = FakeClock()
    retry = dberrors.Retrier(300.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(mysql.connector.Error):
        retry(lost_connection, "the summary", limit_s=30.0)
    assert clock.now - 1000.0 == pytest.approx(30.0)


# --- item 1: every failure ends the same way --------------------------------------------------------


@pytest.mark.unit
def test_every_failure_becomes_one_line_and_exit_1(tmp_path):
    """Whatever the exception (OSError() has errno None, SystemExit(0) a code of 0), the failure
    file holds one line and the job exits 1."""
    folders = {"model folder": tmp_path / "model"}
    cases = [
        (OSError(), "OSError (an unexpected error: the traceback is in the log)"),
        (OSError(28, "No space left on device", str(tmp_path / "model" / "x.tmp")), None),
        (RuntimeError("boom\nsecond line"), "RuntimeError: boom second line (an unexpected error"),
        (UserError("bad\n  value"), "bad value"),
        (SystemExit(0), "sys.exit(0) was called before the job finished"),
    ]
    for exc, expected in cases:
        (tmp_path / "failure").unlink(missing_ok=True)
        with pytest.raises(SystemExit) as info:
            failure.fail(exc, tmp_path, folders)
        written = (tmp_path / "failure").read_text()
        assert info.value.code == 1 and "\n" not in written
        if expected is None:
            assert (
                written == f"Cannot write to the model folder {tmp_path / 'model'}: No space left on device"
            )
        else:
            assert written.startswith(expected)


# --- the real `train` command on full and read-only folders ---------------------------------------


@pytest.mark.process
@pytest.mark.parametrize("how", ["read-only", "full"])
def test_unwritable_output_folder_and_a_bad_hyperparameter_never_exit_0(job_dir, how):
    base = job_dir({"n-trials": "many"})
    kwargs = {"read_only": True} if how == "read-only" else {"fill_to_kb": 1024}
    with tmpfs(base / "output", "1m", **kwargs):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "'n-trials' must be an integer" in result.stderr
    if how == "read-only":
        assert "Could not write the failure file" in result.stderr


@pytest.mark.process
def test_read_only_model_folder_fails_before_any_trial(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1"})
    with tmpfs(base / "model", "1m", read_only=True):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.count("\n") <= 1 and "Traceback" not in failure
    assert f"model folder {base / 'model'}" in failure and "Read-only file system" in failure
    assert not (base / "output" / "data" / "optuna-study.db").exists()


@pytest.mark.process
def test_full_model_folder_is_one_line_and_exit_1(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1", "seed": "1"})
    with tmpfs(base / "model", "64k", fill_to_kb=56):
        result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.count("\n") <= 1 and "Traceback" not in failure
    assert f"model folder {base / 'model'}" in failure and "No space left on device" in failure


# --- item 2: a job that ran trials and completed none fails ----------------------------------------


@pytest.mark.process
def test_a_job_whose_every_trial_failed_fails_with_the_last_reason(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1000", "trial-timeout": "0.5"})
    result = run_train(base)
    assert result.returncode == 1, result.stderr[-2000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("None of the 2 trials this job ran completed"), failure
    assert "ran longer than trial-timeout" in failure
    assert not (base / "model" / "model.json").exists()


@pytest.mark.process
def test_a_job_that_finds_the_budget_met_exits_0_without_a_model(job_dir):
    base = job_dir({"n-trials": "2", "epochs": "1", "max-trials": "1", "study-name": "met"})
    first = run_train(base, TRAINING_JOB_NAME="first")
    assert first.returncode == 0, first.stderr[-2000:]
    for path in (base / "model").iterdir():
        path.unlink()
    second = run_train(base, TRAINING_JOB_NAME="second")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "nothing to run" in second.stderr
    assert list((base / "model").iterdir()) == []
    assert json.loads((base / "output" / "data" / "best_trial.json").read_text())["number"] == 0
    assert not (base / "output" / "failure").exists()


# --- items 9 and 10: jobs on a real MariaDB -------------------------------------------------------


@pytest.mark.process
def test_an_outage_past_db_retry_timeout_ends_the_job_on_time(
    private_mariadb, private_db, moto_endpoint, aws, job_dir
):
    base, proc = job_on_private_db(
        private_db, aws, job_dir, moto_endpoint, "bounded", n_trials=50, retry_s=10
    )
    t0 = time.monotonic()
    private_mariadb.stop()
    try:
        rc, _, err = finish(proc, timeout=180)
        elapsed = time.monotonic() - t0
    finally:
        private_mariadb.start()
    print(f"failed {elapsed:.1f} s after the outage began (db-retry-timeout 10 s)")
    assert rc == 1, err[-2000:]
    assert (base / "output" / "failure").read_text().startswith("The database was unreachable")
    assert elapsed < 10 + 5, err[-3000:]


@pytest.mark.process
def test_a_met_budget_leaves_no_running_trial_of_a_killed_job(shared_job, mysql_db, moto_endpoint):
    beat = {"heartbeat-interval": "1", "heartbeat-grace-period": "15"}
    doomed = start_job(
        shared_job("doomed", **{"n-trials": "1", "epochs": "10000", **beat}), "doomed", moto_endpoint
    )

    wait_for_a_beating_trial(mysql_db)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    # Well within the grace period, another job reaches the study's cap and ends.
    rc, _, err = finish(
        start_job(
            shared_job("finisher", **{"n-trials": "5", "max-trials": "1", **beat}), "finisher", moto_endpoint
        )
    )
    assert rc == 0, err[-2000:]
    trials = study_of(mysql_db).trials
    assert [t.number for t in trials if t.state == TrialState.RUNNING] == []
    assert trials[0].state == TrialState.FAIL
    assert len([t for t in trials if t.state in FINISHED]) >= 1


@pytest.mark.process
def test_a_met_budget_does_not_wait_for_live_jobs(shared_job, mysql_db, moto_endpoint):
    beat = {"heartbeat-interval": "2", "heartbeat-grace-period": "60"}
    alive = start_job(
        shared_job("alive", **{"n-trials": "1", "epochs": "10000", **beat}), "alive", moto_endpoint
    )
    try:
        services.wait_for(
            lambda: any(t.state == TrialState.RUNNING and t.params for t in study_of(mysql_db).trials),
            120,
            "a trial in training",
        )
        t0 = time.monotonic()
        rc, _, err = finish(
            start_job(
                shared_job("finisher", **{"n-trials": "5", "max-trials": "1", **beat}),
                "finisher",
                moto_endpoint,
            )
        )
        assert rc == 0, err[-2000:]
        assert time.monotonic() - t0 < 40, "waited for a live job's trial"
        assert study_of(mysql_db).trials[0].state == TrialState.RUNNING
    finally:
        os.killpg(alive.pid, signal.SIGKILL)
        alive.wait(timeout=30)
