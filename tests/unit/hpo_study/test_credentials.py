"""Database credentials (hpo_study/database/credentials.py): parsing a secret's document and reading each
candidate password once, in process."""

import json

import pytest

from core.errors import UserError
from hpo_study.database import credentials
from tests.support import services

PASSWORD = services.HARD_PASSWORD


@pytest.mark.unit
def test_rds_format_is_read_in_full():
    doc = {
        "username": "admin",
        "password": PASSWORD,
        "engine": "aurora-postgresql",
        "host": "db.x",
        "port": "5433",
        "dbname": "hpo",
    }
    creds = credentials.parse_secret("s", json.dumps(doc))
    assert (creds.username, creds.password, creds.host, creds.port, creds.dbname, creds.engine) == (
        "admin",
        PASSWORD,
        "db.x",
        5433,
        "hpo",
        "postgresql",
    )
    assert PASSWORD not in repr(creds)


@pytest.mark.unit
def test_sample_format_has_only_username_and_password():
    creds = credentials.parse_secret("s", json.dumps({"username": "u", "password": "p"}))
    assert (creds.host, creds.port, creds.dbname, creds.engine) == (None, None, None, None)


@pytest.mark.unit
@pytest.mark.parametrize(
    "body, fragment",
    [
        ("not json " + PASSWORD, "Secret 'demo/db' is not JSON"),
        (json.dumps([PASSWORD]), "must be a JSON object"),
        (json.dumps({"username": "u"}), "lacks 'password'"),
        (json.dumps({"password": PASSWORD}), "lacks 'username'"),
        (json.dumps({"username": "u", "password": PASSWORD, "port": "x"}), "'port' that is not a number"),
        (json.dumps({"username": "u", "password": PASSWORD, "engine": "oracle"}), "engine 'oracle'"),
    ],
)
def test_malformed_secrets_name_the_secret_and_never_the_content(body, fragment):
    with pytest.raises(UserError) as info:
        credentials.parse_secret("demo/db", body)
    assert fragment in str(info.value)
    assert PASSWORD not in str(info.value) and "p@ss" not in str(info.value)


@pytest.mark.unit
def test_each_candidate_password_is_read_once_per_refusal():
    from hpo_study.database.credentials import DbCredentials, LivePassword

    reads = []
    versions = {None: "old", "AWSPENDING": "new"}

    def read(stage):
        reads.append(stage)
        return DbCredentials("u", versions[stage])

    live = LivePassword("s", "old", read)
    assert live.candidates("old") == ["new"] and reads == [None, "AWSPENDING"]
    live.accept("new")
    assert live.value == "new"
    assert live.candidates("old") == ["new"] and len(reads) == 2  # another thread's refusal: no read
    versions[None] = versions["AWSPENDING"] = "new"
    assert live.candidates("new") == [] and len(reads) == 4


@pytest.mark.unit
def test_an_unsure_refusal_reads_the_secret_at_most_every_30_s_of_failing_connects():
    """PostgreSQL's refused login has no code: any failed connect may be one. An outage's
    retries must not call Secrets Manager at every attempt; a rotation is still found, by every
    thread that meets it, and at once after the outage ends."""
    from hpo_study.database.credentials import UNSURE_REREAD_S, DbCredentials, LivePassword

    reads, now = [], [100.0]
    versions = {None: "old"}

    def read(stage):
        reads.append(stage)
        if stage not in versions:
            raise UserError("no such version")
        return DbCredentials("u", versions[stage])

    live = LivePassword("s", "old", read, clock=lambda: now[0])
    assert live.candidates("old", unsure=True) == [] and reads == [None, "AWSPENDING"]
    now[0] += UNSURE_REREAD_S - 1
    assert live.candidates("old", unsure=True) == [] and len(reads) == 2  # an outage's next retries
    versions[None] = "new"  # rotated meanwhile
    assert live.candidates("old", unsure=True) == [] and len(reads) == 2
    now[0] += 1
    assert live.candidates("old", unsure=True) == ["new"] and reads[2:] == [None]
    # A second thread refused before the first accepted "new": it gets what that read found.
    assert live.candidates("old", unsure=True) == ["new"] and len(reads) == 3
    live.accept("new")
    assert live.candidates("old", unsure=True) == ["new"] and len(reads) == 3  # found already
    # The outage is over (a connect succeeded): the next failure reads at once.
    live.connected()
    versions[None] = "newer"
    assert live.candidates("new", unsure=True) == ["newer"] and len(reads) == 4
    # A coded refusal (MySQL's 1045) is never held back by the throttle.
    versions[None] = "newest"
    assert live.candidates("new") == ["newest"] and len(reads) == 5


@pytest.mark.unit
def test_an_unreadable_secret_is_read_once_per_refusal_not_in_every_stage():
    """Secrets Manager unreachable (or access denied): AWSPENDING would fail the same way, and a
    database connection waits on each read."""
    from hpo_study.database.credentials import LivePassword

    reads = []

    def read(stage):
        reads.append(stage)
        raise UserError("Cannot reach Secrets Manager")

    assert LivePassword("s", "old", read).candidates("old") == [] and reads == [None]
