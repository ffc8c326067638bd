"""Helpers for tests of one job on several hosts: N `train` processes laid out as SageMaker lays
out N hosts (an /opt/ml each, a resourceconfig.json each), talking over loopback addresses.

Each host gets its own 127.x.y.N address (all of 127/8 is the loopback interface): the hosts'
names are those addresses, so they resolve without DNS, and the leader's proxy binds its own
address only, as it binds its interface's address on SageMaker. x.y is random per job, so that
tests running at once do not meet on the proxy's fixed port.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
from pathlib import Path

from devtools.localjob import digits_channels, write_job_folder
from tests.support import jobs

WAITING_MODEL = '''
"""A model-module whose trials wait WAIT_S seconds without the CPU (time.sleep), then train a
linear layer: the hosts' coordination is what takes the time, not this machine's two cores."""
import os
import time

import chainer.links as L


def suggest_params(trial):
    return {"n_units": trial.suggest_int("n_units", 4, 64, log=True)}


def build_network(params, n_features, n_classes):
    time.sleep(float(os.environ.get("WAIT_S", "0")))
    return L.Linear(n_features, n_classes)
'''


def loopback_hosts(n: int) -> list[str]:
    a, b = random.randint(100, 250), random.randint(1, 250)
    return [f"127.{a}.{b}.{i}" for i in range(1, n + 1)]


class HostJob:
    """One training job on N hosts (processes), each with its own base folder."""

    def __init__(
        self,
        root: Path,
        n: int,
        hyperparameters: dict[str, str],
        checkpoints: bool = False,
        waiting_model: bool = False,
        name: str = "hosts-job",
        channels: dict | None = None,
    ) -> None:
        self.root, self.name = root, name
        self.hosts = loopback_hosts(n)
        self.bases: dict[str, Path] = {}
        channels = channels or digits_channels()
        hps = dict(hyperparameters)
        if waiting_model:
            hps["model-module"] = "waiting_model"
        for i, host in enumerate(self.hosts, start=1):
            base = write_job_folder(root / f"host{i}", hps, channels)
            (base / "input/config/resourceconfig.json").write_text(
                json.dumps({"current_host": host, "hosts": self.hosts, "network_interface_name": "lo"})
            )
            if checkpoints:
                (base / "checkpoints").mkdir()
            if waiting_model:
                (base / "code").mkdir()
                (base / "code/waiting_model.py").write_text(WAITING_MODEL)
            self.bases[host] = base
        self.procs: dict[str, jobs.Followed] = {}

    @property
    def leader(self) -> str:
        return self.hosts[0]

    def start(self, host: str, **env: str) -> jobs.Followed:
        environ = jobs.train_env(self.bases[host], TRAINING_JOB_NAME=self.name, **env)
        proc = subprocess.Popen(
            [str(jobs.VENV_BIN / "train")],
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs[host] = jobs.Followed(proc)
        return self.procs[host]

    def start_all(self, **env: str) -> None:
        for host in self.hosts:
            self.start(host, **env)

    def finish_all(self, timeout: float = 300) -> dict[str, int]:
        return {host: proc.finish(timeout)[0] for host, proc in self.procs.items()}

    def signal(self, host: str, sig: signal.Signals) -> None:
        os.kill(self.procs[host].proc.pid, sig)

    def kill_all(self) -> None:
        """Clean-up: nothing of this job outlives the test."""
        for proc in self.procs.values():
            if proc.proc.poll() is None:
                os.kill(proc.proc.pid, signal.SIGCONT)
                proc.proc.kill()
                proc.proc.wait(30)

    def study_file(self) -> Path:
        leader = self.bases[self.leader]
        checkpointed = leader / "checkpoints" / self.leader / "optuna-study.db"
        return checkpointed if checkpointed.exists() else leader / "output/data/optuna-study.db"

    def query(self, sql: str, *args: object) -> list[tuple]:
        """Read the leader's study file as it is now (SQLite: readers do not block its writer)."""
        conn = sqlite3.connect(f"file:{self.study_file()}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def files(self, host: str, sub: str) -> list[str]:
        folder = self.bases[host] / sub
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
