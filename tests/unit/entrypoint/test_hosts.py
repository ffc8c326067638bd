"""One training job on several hosts (instance_count > 1): N `train` processes laid out as N
SageMaker hosts (tests/support/hosts.py), the leader serving its embedded study with Optuna's gRPC proxy."""

from __future__ import annotations

import json
import signal
import time

import optuna
import pytest
from optuna.trial import TrialState

from entrypoint import hosts as hosts_mod
from entrypoint import proxy
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


@pytest.mark.unit
def test_the_leader_is_the_first_of_the_sorted_hosts():
    cluster = hosts_mod.read({"current_host": "algo-2", "hosts": ["algo-2", "algo-10", "algo-1"]})
    assert cluster.leader == "algo-1" and not cluster.is_leader and cluster.others == ("algo-1", "algo-10")
    assert hosts_mod.read({"current_host": "algo-1", "hosts": ["algo-1"]}) is None
    assert hosts_mod.read(None) is None


@pytest.mark.unit
def test_hosts_of_one_job_sample_with_seeds_of_their_own():
    from entrypoint.job import JobContext
    from entrypoint.settings import Settings

    seeds = {JobContext(Settings(seed=1), "job", host=h).seed for h in ("algo-1", "algo-2", "algo-3")}
    assert len(seeds) == 3 and JobContext(Settings(seed=1), "job").seed not in seeds


@pytest.mark.unit
def test_a_proxy_that_does_not_answer_is_a_transient_error_naming_the_leader():
    import grpc

    from entrypoint.dberrors import describe, is_transient

    class Down(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "connection refused"

    class Stub:
        def GetStudyIdFromName(self, request, timeout, wait_for_ready):
            assert timeout == 2.0 and wait_for_ready
            raise Down()

    calls = proxy._Calls(Stub(), "the study's leader host algo-1 (port 13000)", 2.0)
    with pytest.raises(Exception) as caught:
        calls.GetStudyIdFromName(object())
    assert is_transient(caught.value)
    assert describe(caught.value).startswith(
        "StorageUnreachable: the study's leader host algo-1 (port 13000)"
    )
    assert proxy.call_timeout(6) == 2.0 and proxy.call_timeout(300) == proxy.MAX_CALL_TIMEOUT_S


@pytest.mark.unit
def test_the_proxy_binds_the_job_interface_address_never_every_interface(monkeypatch):
    import socket
    from types import SimpleNamespace

    import psutil

    eth0 = [SimpleNamespace(family=socket.AF_INET, address="10.0.1.5", netmask="255.255.255.0")]
    monkeypatch.setattr(psutil, "net_if_addrs", lambda: {"eth0": eth0, "lo": []})
    names = {"algo-1": "10.0.1.5", "elsewhere": "192.168.9.9"}

    def resolve(name):
        if name not in names:
            raise socket.gaierror("unknown")
        return names[name]

    monkeypatch.setattr(socket, "gethostbyname", resolve)
    cluster = hosts_mod.Cluster("algo-1", ("algo-1", "algo-2"), "eth0")
    assert hosts_mod.bind_address(cluster) == "10.0.1.5"
    # A name resolving off the interface (or not at all): the interface's own address.
    for current in ("elsewhere", "unknown"):
        assert hosts_mod.bind_address(hosts_mod.Cluster(current, (current, "z"), "eth0")) == "10.0.1.5"
    with pytest.raises(Exception, match="network interface 'eth9' has no IPv4 address"):
        hosts_mod.bind_address(hosts_mod.Cluster("unknown", ("unknown", "z"), "eth9"))


# --- the agreement at the end (hosts.Roster), on one in-memory study: deterministic, no processes


def _rosters(monkeypatch, names, stopping, interval_s=60.0, grace_s=180.0, storage=None):
    """One Roster per host, on one shared in-memory study; after SIGTERM when ``stopping``.
    The stop waits are scaled down (50 -> 2 s, 12 -> 0.5 s), keeping their order."""
    from entrypoint.dberrors import Retrier
    from entrypoint.stopping import Guard

    monkeypatch.setattr(hosts_mod, "STOP_WAIT_S", 2.0)
    monkeypatch.setattr(hosts_mod, "ACK_WAIT_S", 0.5)
    monkeypatch.setattr(hosts_mod, "POLL_S", 0.05)
    if storage is None:
        storage = optuna.storages.InMemoryStorage()
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    rosters = {}
    for name in names:
        guard = Guard()
        if stopping:
            guard.stop.set()
            guard.stopped_at = time.monotonic()
        cluster = hosts_mod.Cluster(name, tuple(sorted(names)))
        rosters[name] = hosts_mod.Roster(
            cluster, "job", storage, 0, interval_s, grace_s, Retrier(300, guard.stop), guard
        )
    return rosters


def _model(trial, value):
    from core.artifact import ModelRecord

    return ModelRecord("w.npz", {}, 64, 10, trial_number=trial, value=value)


def _finish_all(rosters, plan, enter=True):
    """Run roster.finish(model) for each (host, delay, model) in ``plan`` in its own thread."""
    import threading

    out = {}

    def run(host, delay, model):
        time.sleep(delay)
        if not enter:
            out[host] = rosters[host].finish(model, "maximize")
            return
        with rosters[host]:
            out[host] = rosters[host].finish(model, "maximize")

    threads = [threading.Thread(target=run, args=step, daemon=True) for step in plan]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return out


@pytest.mark.unit
def test_after_sigterm_a_worker_that_finished_first_still_gets_the_model_the_leader_gives_it(monkeypatch):
    # Every host got SIGTERM at once; algo-3 froze; algo-2 finished at once with the best model,
    # the leader 1 s later (its trial took longer to stop). Stop clocks run from SIGTERM on every
    # host: the worker is still waiting when the leader decides, so it keeps the model.
    rosters = _rosters(monkeypatch, ("algo-1", "algo-2", "algo-3"), stopping=True)
    rosters["algo-3"]._post(state="running")
    started = time.monotonic()
    out = _finish_all(rosters, [("algo-2", 0.0, _model(5, 0.99)), ("algo-1", 1.0, _model(3, 0.90))])
    assert out["algo-1"].model_host == "algo-2" and out["algo-1"].absent == ("algo-3",)
    assert [h for h, d in out.items() if d.keeps_model(h)] == ["algo-2"]
    assert time.monotonic() - started < 2.0 + 3 * 0.5 + 1.0  # within the (scaled) stop budget


@pytest.mark.unit
def test_a_chosen_host_that_died_before_confirming_is_replaced_by_the_best_that_confirmed(monkeypatch):
    # algo-3 posted "done" with the best model and died before reading the decision: the leader
    # proposes it, gets no confirmation, and gives the model to the best host that confirmed.
    rosters = _rosters(
        monkeypatch, ("algo-1", "algo-2", "algo-3"), stopping=False, interval_s=0.2, grace_s=1.0
    )
    rosters["algo-3"]._post(state="done", model={"trial": 7, "value": 0.999})  # no beacon: dead
    out = _finish_all(rosters, [("algo-2", 0.0, _model(5, 0.95)), ("algo-1", 0.2, _model(3, 0.90))])
    assert out["algo-1"].model_host == out["algo-2"].model_host
    assert out["algo-1"].model_host == "algo-2" and out["algo-1"].model_trial == 5
    assert "algo-3" in out["algo-1"].absent


@pytest.mark.unit
def test_after_sigterm_a_worker_whose_leader_is_gone_exits_within_the_stop_budget(monkeypatch, caplog):
    # The leader's proxy is gone: every call fails as transient. db-retry-timeout is 300 s, but
    # after SIGTERM the worker gives up within its stop budget (scaled: 2 + 3 x 0.5 s), no model.
    from entrypoint.dberrors import StorageUnreachable

    class Gone(optuna.storages.InMemoryStorage):
        def set_study_system_attr(self, *args):
            raise StorageUnreachable("the study's leader host algo-1 (port 13000) did not answer")

        get_study_system_attrs = set_study_system_attr

    rosters = _rosters(monkeypatch, ("algo-1", "algo-2"), stopping=True, storage=Gone())
    started = time.monotonic()
    out = _finish_all({"algo-2": rosters["algo-2"]}, [("algo-2", 0.0, _model(5, 0.99))], enter=False)
    assert out["algo-2"] == hosts_mod.Decision(None)
    assert time.monotonic() - started < 2.0 + 3 * 0.5 + 2.0
    assert "did not answer within" in caplog.text and "keeps no model" in caplog.text


@pytest.mark.unit
def test_the_proxy_takes_large_messages_and_never_shares_its_port():
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="big")
    port = services.free_port()
    with proxy.ProxyServer(study, "127.0.0.1", port, 60):
        # A second server on the same port (gRPC sets SO_REUSEPORT by default) is refused.
        with pytest.raises(RuntimeError, match="Failed to bind"):
            with proxy.ProxyServer(optuna.create_study(study_name="other"), "127.0.0.1", port, 60):
                pass
        client = proxy.ProxyClient("127.0.0.1", port, 5.0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                big = "x" * (5 << 20)  # above gRPC's default 4 MiB receive limit
                study_id = client.get_study_id_from_name("big")
                client.set_study_user_attr(study_id, "big", big)
            assert study.user_attrs["big"] == big
        finally:
            client.close()


@pytest.mark.unit
def test_the_leader_s_own_client_reaches_the_address_its_proxy_bound():
    # The leader's own name may resolve to an address the proxy did not bind (hosts.bind_address
    # falls back to the interface's address): its client connects to the bound address.
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="bound")
    port = services.free_port()
    with proxy.ProxyServer(study, "127.0.0.1", port, 60):
        client = proxy.ProxyClient("algo-1.invalid", port, 5.0, address="127.0.0.1")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert client.get_study_id_from_name("bound") == study._study_id
            assert "algo-1.invalid" in client.shown
        finally:
            client.close()


@pytest.mark.unit
def test_after_the_leader_fails_a_worker_s_next_call_fails_at_once_quoting_it():
    import warnings

    from core.errors import UserError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="failing")
    port = services.free_port()
    with proxy.ProxyServer(study, "127.0.0.1", port, 60) as server:
        client = proxy.ProxyClient("algo-1", port, 5.0, address="127.0.0.1")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study_id = client.get_study_id_from_name("failing")
                server.fail("Cannot read channel 'train': no such file", linger_s=0)
                started = time.monotonic()
                with pytest.raises(UserError) as caught:
                    client.get_study_system_attrs(study_id)
            assert time.monotonic() - started < 2.0  # not db-retry-timeout
            assert str(caught.value) == (
                f"the study's leader host algo-1 (port {port}) failed: Cannot read channel 'train': no such file"
            )
        finally:
            client.close()


@pytest.mark.unit
def test_after_sigterm_a_call_to_a_gone_leader_has_a_short_deadline(monkeypatch):
    import threading
    import warnings

    from entrypoint.dberrors import StorageUnreachable

    monkeypatch.setattr(proxy, "STOPPING_CALL_TIMEOUT_S", 0.5)
    stop = threading.Event()
    stop.set()
    client = proxy.ProxyClient("algo-1", services.free_port(), 20.0, address="127.0.0.1", stop=stop)
    try:
        started = time.monotonic()
        with warnings.catch_warnings(), pytest.raises(StorageUnreachable):
            warnings.simplefilter("ignore")
            client.get_study_id_from_name("gone")
        assert time.monotonic() - started < 5.0  # not the call's usual 20 s
    finally:
        client.close()
