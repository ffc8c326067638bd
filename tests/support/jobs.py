"""Helpers for tests that run the real `train` command in a child process, as SageMaker runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import TrialState

from devtools.localjob import train_env
from tests.support import services

VENV_BIN = Path(sys.executable).parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write arrays to an .npz file (its folder created); return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def start_job(base: Path, name: str, moto_endpoint: str, **extra_env: str) -> subprocess.Popen:
    """Start `train` on a job folder in its own process group, boto3 pointed at the moto server."""
    env = train_env(base, TRAINING_JOB_NAME=name, **services.aws_env(moto_endpoint), **extra_env)
    return subprocess.Popen(
        [str(VENV_BIN / "train")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    """Wait for a job started by `start_job`; return its exit code, stdout and stderr."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


class Followed:
    """A job's stdout and stderr read as they come (so a test can wait for a line), then its end.

    Use instead of `finish` when the test must act on what the job has logged so far.
    """

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._out.extend, args=(proc.stdout,), daemon=True),
            threading.Thread(target=self._err.extend, args=(proc.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def stderr(self) -> str:
        return "".join(self._err)

    def wait_for_stderr(self, text: str, timeout: float) -> None:
        """Return once `text` is in the job's stderr; fail if the job ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.proc.poll() is not None:
                self.finish(timeout=10)  # everything it wrote is read now
                if text in self.stderr():
                    return
                raise AssertionError(f"the job ended ({self.proc.returncode}) before logging {text!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the job did not log {text!r} within {timeout} s")
            time.sleep(0.1)  # polling pace

    def finish(self, timeout: float = 600) -> tuple[int, str, str]:
        """Like `finish`: wait for the end, return exit code, stdout and stderr."""
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return code, "".join(self._out), self.stderr()


def study_of(db: services.MySqlDatabase, name: str = "shared") -> optuna.Study:
    """Load a study from a MariaDB database as the launcher would (password not in the URL)."""
    return optuna.load_study(study_name=name, storage=db.optuna_storage())


def wait_for_training(load_study, min_complete: int) -> None:
    """Wait until a study has `min_complete` completed trials and one in training."""

    def ready():
        trials = load_study().trials
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        # A running trial with its parameters: it trains (its epoch values are written when it ends).
        running = [t for t in trials if t.state == TrialState.RUNNING and t.params]
        return len(complete) >= min_complete and running

    services.wait_for(ready, 180, "a completed trial and one in training")


def wait_for_a_beating_trial(db: services.MySqlDatabase) -> None:
    """Wait until a trial of the shared study trains and has written a heartbeat."""

    def beating():  # the first beat comes within an interval of the trial's start
        study = study_of(db)
        with study._storage._backend.engine.connect() as conn:
            beats = conn.execute(sqlalchemy.text("SELECT COUNT(*) FROM trial_heartbeats")).scalar()
        return beats and any(t.state == TrialState.RUNNING and t.params for t in study.trials)

    services.wait_for(beating, 120, "a trial in training that has beaten")


def kill_a_job_mid_trial(
    shared_job, db: services.MySqlDatabase, moto_endpoint: str, beat: dict[str, str]
) -> None:
    """Start job "doomed" on the shared study with one endless trial, wait for that trial's first
    heartbeat, and SIGKILL the job (the instance is lost: no clean-up runs)."""
    doomed = start_job(
        shared_job("doomed", **{"n-trials": "1", "epochs": "10000", **beat}), "doomed", moto_endpoint
    )
    wait_for_a_beating_trial(db)
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)


def wait_for_heartbeat_to_lapse(
    db: services.MySqlDatabase, trial: optuna.trial.FrozenTrial, grace_s: float, study: str = "shared"
) -> None:
    """Wait until a trial's last heartbeat is older than `grace_s` by the database's clock, the
    test of Optuna's sweep: from then on the sweep of any job on the study fails the trial."""
    storage = db.optuna_storage()
    query = sqlalchemy.text(
        "SELECT NOW(), h.heartbeat FROM trial_heartbeats h JOIN trials t ON t.trial_id = h.trial_id"
        " JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :study AND t.number = :number"
    )

    def lapsed() -> bool:
        with storage.engine.connect() as conn:
            now, beat = conn.execute(query, {"study": study, "number": trial.number}).one()
        return (now - beat).total_seconds() > grace_s

    try:
        services.wait_for(lapsed, 60, f"trial {trial.number}'s heartbeat lapsing past {grace_s} s")
    finally:
        storage.engine.dispose()


def job_on_private_db(
    private_db, aws, job_dir, moto_endpoint, name: str, n_trials: int, retry_s: int, epochs: int = 60
):
    """Start a job on the private MariaDB and wait until it has a completed trial and one in training."""
    secret = aws(private_db.credentials())
    hps = {
        "host": "127.0.0.1",
        "db-port": str(private_db.port),
        "db-name": private_db.name,
        "db-secret": secret,
        "region-name": services.REGION,
        "study-name": "shared",
        "n-trials": str(n_trials),
        "epochs": str(epochs),
        "pruner": "none",
        "db-retry-timeout": str(retry_s),
    }
    base = job_dir(hps)
    proc = start_job(base, name, moto_endpoint)
    wait_for_training(lambda: study_of(private_db), 1)
    return base, proc


def run_train(base: Path, **env: str) -> subprocess.CompletedProcess:
    """Run `train` on a job folder to its end (no moto: for jobs that need no secret)."""
    return subprocess.run(
        [str(VENV_BIN / "train")], env=train_env(base, **env), capture_output=True, text=True, timeout=300
    )


@contextlib.contextmanager
def tmpfs(path: Path, size: str, fill_to_kb: int | None = None, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs on ``path`` (needs root); optionally nearly full, or remounted read-only."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        services.unavailable(f"cannot mount a tmpfs (root needed): {mounted.stderr.decode().strip()}")
    try:
        if fill_to_kb is not None:
            with contextlib.suppress(OSError), open(path / ".filler", "wb") as f:
                f.write(bytes(fill_to_kb * 1024))
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
