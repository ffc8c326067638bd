"""Bounded retries: one deadline for every call of an outage, and a call's own limit under it."""

from __future__ import annotations

import mysql.connector
import pytest

from hpo_study.database import dberrors

# --- one deadline per outage, every sleep capped to what is left ---------------------------


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
