"""One training job on several hosts (instance_count > 1), in process: the leader's choice of the
model, the stop budget after SIGTERM, Optuna's gRPC proxy (entrypoint/multihost/hosts.py, proxy.py)."""

from __future__ import annotations

import time

import optuna
import pytest

from entrypoint.multihost import hosts as hosts_mod
from entrypoint.multihost import proxy
from tests.support import services


@pytest.mark.unit
def test_the_leader_is_the_first_of_the_sorted_hosts():
    cluster = hosts_mod.read({"current_host": "algo-2", "hosts": ["algo-2", "algo-10", "algo-1"]})
    assert cluster.leader == "algo-1" and not cluster.is_leader and cluster.others == ("algo-1", "algo-10")
    assert hosts_mod.read({"current_host": "algo-1", "hosts": ["algo-1"]}) is None
    assert hosts_mod.read(None) is None


@pytest.mark.unit
def test_hosts_of_one_job_sample_with_seeds_of_their_own():
    from entrypoint.job.context import JobContext
    from hpo_study.settings import Settings

    seeds = {JobContext(Settings(seed=1), "job", host=h).seed for h in ("algo-1", "algo-2", "algo-3")}
    assert len(seeds) == 3 and JobContext(Settings(seed=1), "job").seed not in seeds


@pytest.mark.unit
def test_a_proxy_that_does_not_answer_is_a_transient_error_naming_the_leader():
    import grpc

    from hpo_study.database.dberrors import describe, is_transient

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
    from entrypoint.job.stopping import Guard
    from hpo_study.database.dberrors import Retrier

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
    from hpo_study.database.dberrors import StorageUnreachable

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

    from hpo_study.database.dberrors import StorageUnreachable

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
