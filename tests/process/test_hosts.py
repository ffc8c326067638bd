"""One training job on several hosts: N `train` processes laid out as N SageMaker hosts
(tests/support/hosts.py), the leader serving its embedded study with Optuna's gRPC proxy."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from entrypoint.multihost import proxy
from tests.support import services
from tests.support.hosts import HostJob

FAST = {"epochs": "2", "seed": "1", "heartbeat-interval": "1", "heartbeat-grace-period": "3"}


@pytest.fixture
def host_jobs():
    made: list[HostJob] = []
    yield made
    for job in made:
        job.kill_all()


def new_job(host_jobs, *args, **kwargs) -> HostJob:
    job = HostJob(*args, **kwargs)
    host_jobs.append(job)
    return job


def trials(job: HostJob) -> list[tuple[int, str, str | None]]:
    """(number, state, host) of every trial in the leader's study file."""
    rows = job.query(
        "SELECT t.number, t.state, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'host' ORDER BY t.number"
    )
    return [(n, s, None if h is None else json.loads(h)) for n, s, h in rows]


def model_hosts(job: HostJob) -> dict[str, list[str]]:
    """The hosts whose model_dir holds anything (a host that finished and keeps no model leaves it empty)."""
    return {h: job.files(h, "model") for h in job.hosts if job.files(h, "model")}


@pytest.mark.process
def test_three_hosts_share_one_study_and_leave_one_model(tmp_path, host_jobs):
    job = new_job(host_jobs, tmp_path, 3, {**FAST, "n-trials": "3", "db-retry-timeout": "60"})
    job.start_all()
    codes = job.finish_all()
    assert codes == {h: 0 for h in job.hosts}, {h: p.stderr()[-2000:] for h, p in job.procs.items()}

    rows = trials(job)
    assert [n for n, _, _ in rows] == list(range(9))  # one study: 3 hosts x n-trials 3, numbers unique
    assert all(state in ("COMPLETE", "PRUNED") for _, state, _ in rows)
    assert sorted(h for _, _, h in rows) == sorted(job.hosts * 3)  # n-trials is per host

    # Exactly one model, on the host that ran the study's best trial, and it is that trial.
    best = json.loads((job.bases[job.leader] / "output/data/best_trial.json").read_text())
    best_host = next(h for n, _, h in rows if n == best["number"])
    assert list(model_hosts(job)) == [best_host]
    model = json.loads((job.bases[best_host] / "model/model.json").read_text())
    assert model["trial_number"] == best["number"] and model["value"] == best["value"]

    # SageMaker merges every host's output data into one output.tar.gz: no name twice.
    outputs = [f for h in job.hosts for f in job.files(h, "output/data")]
    assert len(outputs) == len(set(outputs))
    assert {"trials.csv", "best_trial.json", "optuna-study.db"} <= set(job.files(job.leader, "output/data"))
    for host in job.hosts:
        summary = json.loads((job.bases[host] / "output/data" / host / "host.json").read_text())
        assert summary["keeps_job_model"] == (host == best_host)
        assert summary["trials_run"] and sum(summary["trials_run"].values()) == 3
        assert summary["hosts_given_up_on"] == []

    # Each host samples with a seed of its own (seed + job name + host name).
    first = {}
    for row in job.query(
        "SELECT t.number, a.value_json, p.param_value FROM trials t JOIN trial_user_attributes a "
        "ON a.trial_id = t.trial_id AND a.key = 'host' JOIN trial_params p ON p.trial_id = t.trial_id "
        "AND p.param_name = 'n_units_l0' ORDER BY t.number"
    ):
        first.setdefault(json.loads(row[1]), []).append(row[2])
    assert len({tuple(v) for v in first.values()}) == len(first)


@pytest.mark.process
def test_hosts_on_a_database_each_join_the_study_and_leave_one_model(
    tmp_path, host_jobs, aws, mysql_db, moto_endpoint
):
    """With db-secret every host joins the database's study as separate jobs do (no proxy)."""
    hps = {
        **FAST,
        "n-trials": "3",
        "host": "127.0.0.1",
        "db-port": str(mysql_db.port),
        "db-name": mysql_db.name,
        "db-secret": aws(mysql_db.credentials(engine="mysql")),
        "region-name": services.REGION,
        "study-name": "hosts-db",
    }
    job = new_job(host_jobs, tmp_path, 3, hps)
    job.start_all(**services.aws_env(moto_endpoint))
    codes = job.finish_all()
    assert codes == {h: 0 for h in job.hosts}, {h: p.stderr()[-2000:] for h, p in job.procs.items()}
    study = optuna.load_study(study_name="hosts-db", storage=mysql_db.optuna_storage())
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(study.trials) == len(finished) == 9
    assert sorted(t.user_attrs["host"] for t in finished) == sorted(job.hosts * 3)
    assert not any("Serving study" in p.stderr() for p in job.procs.values())
    best = json.loads((job.bases[job.leader] / "output/data/best_trial.json").read_text())
    best_host = study.trials[best["number"]].user_attrs["host"]
    assert list(model_hosts(job)) == [best_host]
    assert (
        json.loads((job.bases[best_host] / "model/model.json").read_text())["trial_number"] == best["number"]
    )
    outputs = [f for h in job.hosts for f in job.files(h, "output/data")]
    assert len(outputs) == len(set(outputs)) and "optuna-study.db" not in outputs


@pytest.mark.process
def test_a_killed_worker_s_trial_is_failed_and_run_again(tmp_path, host_jobs):
    job = new_job(
        host_jobs,
        tmp_path,
        2,
        {**FAST, "n-trials": "20", "epochs": "1", "db-retry-timeout": "60", "pruner": "none"},
        waiting_model=True,
    )
    leader, worker = job.hosts
    job.start(leader, WAIT_S="1")
    job.start(worker, WAIT_S="600")  # its first trial never ends on its own

    job.procs[worker].wait_for_stderr("Trial ", 120)
    killed = int(job.procs[worker].stderr().split("Trial ")[1].split()[0])

    def beats() -> bool:  # the trial's first heartbeat, recorded through the proxy
        return bool(
            job.query(
                "SELECT 1 FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.number = ?",
                killed,
            )
        )

    services.wait_for(beats, 60, f"a heartbeat of trial {killed}")
    job.signal(worker, signal.SIGKILL)

    code, _, err = job.procs[leader].finish(300)
    assert code == 0, err[-3000:]
    rows = {n: (s, h) for n, s, h in trials(job)}
    assert rows[killed][0] == "FAIL"  # failed by the leader's sweep of Optuna's heartbeats
    retried = job.query(
        "SELECT t.number, t.state FROM trials t JOIN trial_system_attributes s ON s.trial_id = t.trial_id"
        " WHERE s.key = 'failed_trial' AND s.value_json = ?",
        str(killed),
    )
    assert [state for _, state in retried] == ["COMPLETE"]  # run again, by the leader
    assert f"Host {worker} has shown no sign of life" in err
    summary = json.loads((job.bases[leader] / "output/data" / leader / "host.json").read_text())
    assert summary["hosts_given_up_on"] == [worker] and summary["keeps_job_model"]
    assert list(model_hosts(job)) == [leader]  # the killed host's model_dir stays empty too


@pytest.mark.process
@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL], ids=["stopped", "killed"])
def test_a_stopped_or_dead_leader_fails_the_workers_naming_it(tmp_path, host_jobs, sig):
    job = new_job(
        host_jobs,
        tmp_path,
        2,
        {**FAST, "n-trials": "200", "epochs": "1", "db-retry-timeout": "6"},
        waiting_model=True,
    )
    leader, worker = job.hosts
    job.start_all(WAIT_S="0.2")
    job.procs[worker].wait_for_stderr("finished with value", 120)
    job.signal(leader, sig)
    stopped = time.monotonic()
    code, _, err = job.procs[worker].finish(120)
    took = time.monotonic() - stopped
    assert code == 1
    failure = (job.bases[worker] / "output/failure").read_text()
    assert f"leader host {leader}" in failure, failure
    assert "db-retry-timeout (6 s)" in failure
    # db-retry-timeout after the first call that timed out (a third of it), and its last retry.
    assert took < 6 + 2 * proxy.call_timeout(6) + 5, took


@pytest.mark.process
def test_sigterm_on_every_host_exits_0_and_a_restarted_job_resumes_the_study(tmp_path, host_jobs):
    hps = {**FAST, "n-trials": "100", "epochs": "1", "db-retry-timeout": "30"}
    job = new_job(host_jobs, tmp_path, 3, hps, checkpoints=True, waiting_model=True)
    job.start_all(WAIT_S="1")
    for host in job.hosts:
        job.procs[host].wait_for_stderr("finished with value", 120)
    for host in job.hosts:
        job.signal(host, signal.SIGTERM)
    stopped = time.monotonic()
    codes = job.finish_all(120)
    took = time.monotonic() - stopped
    assert codes == {h: 0 for h in job.hosts}, {h: p.stderr()[-2000:] for h, p in job.procs.items()}
    assert took < 60, took  # well under SageMaker's 120 s
    assert len(model_hosts(job)) == 1
    # The embedded study is in the leader's own folder of the checkpoint prefix.
    study_file = job.bases[job.leader] / "checkpoints" / job.leader / "optuna-study.db"
    assert study_file.is_file()
    before = trials(job)
    interrupted = [n for n, s, _ in before if s == "WAITING"]
    assert interrupted  # each host's interrupted trial was re-queued

    # A restarted spot job: the same hosts, a fresh /opt/ml except the restored checkpoints.
    for base in job.bases.values():
        for sub in ("model", "output"):
            for path in sorted((base / sub).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
        (base / "input/config/hyperparameters.json").write_text(json.dumps({**hps, "n-trials": "6"}))
    job.procs.clear()
    job.start_all(WAIT_S="0")
    codes = job.finish_all(300)
    assert codes == {h: 0 for h in job.hosts}, {h: p.stderr()[-2000:] for h, p in job.procs.items()}
    after = {n: s for n, s, _ in trials(job)}
    assert len(after) >= len(before) and all(after[n] in ("COMPLETE", "PRUNED") for n in interrupted)
    assert len(model_hosts(job)) == 1
