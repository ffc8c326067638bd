"""What every part of one training job shares, built once by train.py and passed down."""

from __future__ import annotations

import dataclasses
import hashlib

from entrypoint.constants import LOCAL_JOB_NAME
from entrypoint.job.stopping import Guard
from hpo_study.database.dberrors import Retrier
from hpo_study.settings import Settings


def job_seed(base_seed: int | None, job_name: str) -> int | None:
    """A seed of this job's own, so that identical parallel jobs do not repeat each other."""
    if base_seed is None:
        return None
    digest = hashlib.sha256(f"{base_seed}:{job_name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


@dataclasses.dataclass(frozen=True)
class JobContext:
    """One job's settings, name and host, its own seed, its stop signal, and its database retry policy
    (one deadline per outage, shared by every call of the job)."""

    settings: Settings
    name: str = LOCAL_JOB_NAME
    guard: Guard = dataclasses.field(default_factory=Guard)
    host: str | None = None  # in a job of several hosts: this one (entrypoint/multihost/hosts.py)
    seed: int | None = dataclasses.field(init=False)  # derived from settings.seed and the name
    retry: Retrier = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        # Frozen: the derived fields are set once, here.
        # Each host of a job its own seed too, so that hosts do not sample alike.
        own = self.name if self.host is None else f"{self.name}/{self.host}"
        object.__setattr__(self, "seed", job_seed(self.settings.seed, own))
        object.__setattr__(self, "retry", Retrier(self.settings.db_retry_timeout, self.guard.stop))
