"""Which objective value is better: the one rule for the keeper, ``status``, ``best`` and the report.

The rule: in the study's direction, a strictly better finite value wins. A tie is not better,
so among equal values the incumbent stays: the earliest trial, since a job runs its trials
one after another and the study's trials are read in trial-number order. That is why the
study's best trial (``best``, ``status``, best_trial.json) is always the model its job kept.
A non-finite value (NaN, +-inf) never wins, and any finite value beats a missing or
non-finite incumbent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

MAXIMIZE = "maximize"
MINIMIZE = "minimize"
DIRECTIONS = (MAXIMIZE, MINIMIZE)

T = TypeVar("T")


def is_better(direction: str, a: float | None, b: float | None) -> bool:
    """True when value ``a`` replaces the incumbent ``b`` (None: no incumbent yet).

    ``direction`` is "maximize" or "minimize", in any case (Optuna's ``StudyDirection.name``).
    """
    key = direction.lower()
    if key not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if a is None or not math.isfinite(a):
        return False
    if b is None or not math.isfinite(b):
        return True
    return a > b if key == MAXIMIZE else a < b


def best(direction: str, items: Iterable[T], value: Callable[[T], float | None]) -> T | None:
    """The item whose value wins under ``is_better``, the first of equals; None if none is finite."""
    winner: T | None = None
    for item in items:
        if is_better(direction, value(item), None if winner is None else value(winner)):
            winner = item
    return winner
