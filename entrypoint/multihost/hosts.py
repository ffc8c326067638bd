"""Several hosts in one training job (``instance_count`` > 1): who leads, where each host writes,
and how the hosts agree at the end which one keeps the model.

SageMaker gives every host the same hyperparameters and channels and a ``resourceconfig.json``
naming ``current_host`` and every host. The leader is the first of the sorted hosts (as the
training toolkit picks its master). SageMaker packs every host's model_dir into one
model.tar.gz and every host's output data into one output.tar.gz, where same-named files clash;
and it restores the whole checkpoint prefix on every host of a restarted job (see
docs/several-hosts.md). So: one host keeps the model; the study-wide report is the
leader's; per-host files go under a folder named after the host.

The end of a job (:class:`Roster`): each host posts a small record as a system attribute of the
study (through the proxy or the database, whichever the study lives on), every heartbeat interval
and whenever its state changes: ``running``, ``done`` with the model it kept, ``closed``. The
leader waits until every other host is done, or has shown no sign of life (its record has not
changed) for the heartbeat grace period, picks the best of the kept models (core/ranking.py, the
report's rule, so it is the study's best trial whenever its host is alive), posts the decision,
and waits for each host to read it. A host that no longer hears from the leader fails, naming
it; after SIGTERM every wait is cut short so that each host exits within SageMaker's 120 s.
Hand-written: no library agrees on an outcome over an Optuna storage, and the records are a
few lines of JSON.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna

from core import ranking
from core.artifact import META_FILE, ModelRecord
from core.errors import UserError
from entrypoint.constants import HOST_SUMMARY_FILE
from entrypoint.job.stopping import Guard
from hpo_study.database.dberrors import Retrier, describe, is_transient

logger = logging.getLogger(__name__)

ATTR_PREFIX = "sagemaker-optuna:hosts"  # study system attributes: <prefix>:<job>:<host> and :decision
POLL_S = 0.5  # how often a waiting host reads the others' records
# After SIGTERM, counted from its arrival on each host (SageMaker signals every host at once and
# kills them 120 s later): the leader waits STOP_WAIT_S for the others' last trials, then
# ACK_WAIT_S for the chosen host to confirm, then ACK_WAIT_S for the hosts to read the final
# decision; a worker waits for it a further ACK_WAIT_S, so it never gives up before the leader
# has decided (50 + 3 x 12 = 86 s: every host exits within ~90 s).
STOP_WAIT_S = 50.0
ACK_WAIT_S = 12.0


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This job's hosts, as resourceconfig.json names them."""

    current: str
    hosts: tuple[str, ...]  # sorted: the first is the leader
    interface: str | None = None

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.current == self.leader

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(h for h in self.hosts if h != self.current)


def read(resources: Mapping[str, Any] | None) -> Cluster | None:
    """The job's hosts from resourceconfig.json's content; None for a one-host job."""
    if not resources:
        return None
    hosts = resources.get("hosts") or []
    if len(hosts) <= 1:
        return None
    current = resources.get("current_host")
    if current not in hosts:
        raise UserError(f"resourceconfig.json: current_host {current!r} is not one of its hosts {hosts}")
    return Cluster(current, tuple(sorted(hosts)), resources.get("network_interface_name"))


def _interface_networks(name: str | None) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses (with their networks) of the named network interface."""
    import psutil  # only a job of several hosts needs it

    return [
        ipaddress.IPv4Interface(f"{a.address}/{a.netmask}" if a.netmask else a.address)
        for a in psutil.net_if_addrs().get(name or "", [])
        if a.family == socket.AF_INET
    ]


def bind_address(cluster: Cluster) -> str:
    """Where the leader's proxy listens: on resourceconfig.json's network interface only, never
    on every interface. The address this host's name resolves to when it is on that interface's
    network (the address the other hosts reach), else the interface's own address."""
    networks = _interface_networks(cluster.interface)
    try:
        resolved = ipaddress.IPv4Address(socket.gethostbyname(cluster.current))
    except OSError:
        resolved = None
    if resolved is not None and (not networks or any(resolved in n.network for n in networks)):
        return str(resolved)
    if networks:
        if resolved is not None:
            logger.warning(
                "Host name %s resolves to %s, not on network interface %s: serving the study on %s; "
                "the other hosts must reach %s at %s",
                cluster.current,
                resolved,
                cluster.interface,
                networks[0].ip,
                cluster.current,
                networks[0].ip,
            )
        return str(networks[0].ip)
    raise UserError(
        f"Cannot find this host's address to serve the study on: network interface "
        f"{cluster.interface!r} has no IPv4 address and host name {cluster.current!r} does not resolve"
    )


def host_folder(folder: Path | None, cluster: Cluster) -> Path | None:
    """A folder of this host's own inside ``folder`` (None stays None)."""
    if folder is None:
        return None
    own = folder / cluster.current
    own.mkdir(parents=True, exist_ok=True)
    return own


def publish_model(kept: Path, model_dir: Path) -> None:
    """Copy this host's kept model into model_dir, model.json last (the commit point: serving
    and the keeper read a model only through it)."""
    files = sorted(p for p in kept.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.name == META_FILE):
        target = model_dir / path.relative_to(kept)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


@dataclasses.dataclass(frozen=True)
class Decision:
    """Which host keeps the job's model (None: no host kept one)."""

    model_host: str | None
    model_trial: int | None = None
    model_value: float | None = None
    hosts: tuple[str, ...] = ()  # the hosts the leader heard finish
    absent: tuple[str, ...] = ()  # the hosts it gave up on (dead, stopped, or too slow after SIGTERM)

    def keeps_model(self, host: str) -> bool:
        return self.model_host == host


def _decision_from(doc: Mapping[str, Any]) -> Decision:
    return Decision(
        doc["model_host"],
        doc["model_trial"],
        doc.get("model_value"),
        tuple(doc["hosts"]),
        tuple(doc["absent"]),
    )


class _Liveness:
    """When each record last changed, by this process's clock: no clocks compared across hosts."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[Any, float]] = {}

    def silent_for(self, host: str, record: Mapping[str, Any] | None) -> float:
        mark = None if record is None else (record.get("nonce"), record.get("seq"), record.get("state"))
        now = self._clock()
        last = self._seen.get(host)
        if last is None or last[0] != mark:
            self._seen[host] = (mark, now)
            return 0.0
        return now - last[1]


def host_key(job_name: str, host: str) -> str:
    return f"{ATTR_PREFIX}:{job_name}:{host}"


def decision_key(job_name: str) -> str:
    return f"{ATTR_PREFIX}:{job_name}:decision"


def reset(
    storage: optuna.storages.BaseStorage, study_id: int, job_name: str, cluster: Cluster, retry: Retrier
) -> None:
    """The leader, before the other hosts can finish: forget a previous run's records (a
    restarted spot job has the same job name), so that only this run's count."""
    for host in cluster.others:
        retry(
            lambda host=host: storage.set_study_system_attr(
                study_id, host_key(job_name, host), {"state": "starting"}
            ),
            "resetting the hosts' states",
        )
    retry(
        lambda: storage.set_study_system_attr(study_id, decision_key(job_name), None),
        "resetting the decision",
    )


class Roster:
    """This host's part in agreeing, at the end of the job, which host keeps the model."""

    def __init__(
        self,
        cluster: Cluster,
        job_name: str,
        storage: optuna.storages.BaseStorage,
        study_id: int,
        interval_s: float,
        grace_s: float,
        retry: Retrier,
        guard: Guard,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster, self.job_name = cluster, job_name
        self._storage, self._study_id = storage, study_id
        self._interval_s, self._grace_s = interval_s, grace_s
        self._retry, self._guard, self._clock = retry, guard, clock
        self.nonce = uuid.uuid4().hex  # this run of this host (a restarted job's hosts have new ones)
        self._record: dict[str, Any] = {"state": "running", "nonce": self.nonce, "seq": 0}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._beacon = threading.Thread(target=self._beat, name="host-beacon", daemon=True)
        self._started = clock()
        # A host that cannot reach the study gives up after db-retry-timeout: wait that long for
        # one never heard from, and a grace period more.
        self._join_s = retry.timeout_s + grace_s
        self._stop_since: float | None = None
        self._stop_clock()

    # --- the stop budget (after SIGTERM) -----------------------------------------------------

    def _stop_clock(self) -> float | None:
        """When SIGTERM arrived (by this process's clock), or None before it: every host counts
        its stop deadlines from that moment, not from when it reached the end."""
        if self._stop_since is None and self._guard.stopping:
            self._stop_since = self._guard.stopped_at or self._clock()
        return self._stop_since

    def _stop_deadline(self, wait_s: float) -> float | None:
        since = self._stop_clock()
        return None if since is None else since + wait_s

    @property
    def _budget_s(self) -> float:
        """This host's whole stop budget: the leader's last wait ends before a worker's."""
        return STOP_WAIT_S + (2 if self.cluster.is_leader else 3) * ACK_WAIT_S

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        """A roster call: retried through outages, but after SIGTERM only for the stop budget left
        (the job's db-retry-timeout may outlast SageMaker's SIGKILL)."""
        deadline = self._stop_deadline(self._budget_s)
        limit = None if deadline is None else max(0.0, deadline - self._clock())
        return self._retry(fn, what, limit_s=limit, stoppable=False)

    # --- keys and records -------------------------------------------------------------------

    def _key(self, host: str) -> str:
        return host_key(self.job_name, host)

    @property
    def _decision_key(self) -> str:
        return decision_key(self.job_name)

    def _post(self, **changes: Any) -> None:
        with self._lock:
            self._record.update(changes)
            self._record["seq"] += 1
            record = dict(self._record)
        self._call(
            lambda: self._storage.set_study_system_attr(
                self._study_id, self._key(self.cluster.current), record
            ),
            "posting this host's state",
        )

    def _read(self) -> tuple[dict[str, dict[str, Any] | None], dict[str, Any] | None]:
        attrs = self._call(
            lambda: self._storage.get_study_system_attrs(self._study_id),
            "reading the hosts' states",
        )
        return {h: attrs.get(self._key(h)) for h in self.cluster.hosts}, attrs.get(self._decision_key)

    # --- lifetime -----------------------------------------------------------------------------

    def __enter__(self) -> Roster:
        self._post(state="running")
        self._beacon.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _beat(self) -> None:
        """A sign of life every heartbeat interval, while the host runs trials or waits."""
        while not self._done.wait(self._interval_s):
            try:
                self._post()
            except Exception as exc:  # the main thread meets the same outage and deals with it
                logger.warning("This host's state not posted: %s", describe(exc))

    def failed(self) -> None:
        """This host fails: the others need not wait for it (best effort: it is failing anyway)."""
        try:
            self._post(state="failed")
        except Exception as exc:
            logger.debug("Could not post the failed state: %s", describe(exc))

    # --- the end ------------------------------------------------------------------------------

    def finish(self, model: ModelRecord | None, direction: str) -> Decision:
        """Post this host's kept model and agree which host keeps the job's one model."""
        kept = None if model is None else {"trial": model.trial_number, "value": model.value}
        try:
            self._post(state="done", model=kept)
            if self.cluster.is_leader:
                return self._lead(direction)
            return self._follow()
        except Exception as exc:
            if not (self._guard.stopping and is_transient(exc)):
                raise
            # After SIGTERM the stop budget ran out in an outage: exiting beats being SIGKILLed.
            logger.warning(
                "Stopping: the hosts' study did not answer within this host's %g s after SIGTERM (%s): "
                "this host keeps no model",
                self._budget_s,
                describe(exc),
            )
            return Decision(None)

    def _lead(self, direction: str) -> Decision:
        """Wait for the others, propose the best kept model, have its host confirm it (else fall
        back to the best host that did confirm), post the final decision, wait for the reads."""
        liveness = _Liveness(self._clock)
        records, finished, absent = self._await_done(liveness)
        mine = dict(self._record)
        candidates = [(self.cluster.current, mine.get("model"))]
        candidates += [
            (h, (records[h] or {}).get("model")) for h in finished if records[h]["state"] != "failed"
        ]
        winner = self._best(direction, candidates)
        doc = self._decision_doc(winner, {h: (records[h] or {}).get("nonce") for h in finished}, absent)
        doc["final"] = False
        self._post_decision(doc)
        if winner is not None and winner[0] != self.cluster.current:
            records, confirmed = self._await_confirmations(winner[0], liveness)
            if winner[0] not in confirmed:
                fallback = [c for c in candidates if c[0] == self.cluster.current]
                fallback += [(h, (records[h] or {}).get("model")) for h in confirmed]
                chosen = self._best(direction, fallback)
                logger.warning(
                    "Host %s did not confirm it keeps the model: %s keeps it instead",
                    winner[0],
                    chosen[0] if chosen else "no host",
                )
                hosts_read = dict(doc["hosts"])
                hosts_read.update({h: records[h]["nonce"] for h in confirmed})
                hosts_read.pop(winner[0], None)
                absent = [h for h in absent if h not in hosts_read] + [winner[0]]
                doc = self._decision_doc(chosen, hosts_read, absent)
        doc["final"] = True
        self._post_decision(doc)
        decision = Decision(
            model_host=doc["model_host"],
            model_trial=doc["model_trial"],
            model_value=doc["model_value"],
            hosts=tuple([self.cluster.current, *doc["hosts"]]),
            absent=tuple(doc["absent"]),
        )
        logger.info(
            "All hosts done: %s keeps the model (trial %s)%s",
            decision.model_host or "no host",
            decision.model_trial,
            f"; hosts given up on: {', '.join(decision.absent)}" if decision.absent else "",
        )
        self._await_reads(doc, liveness)
        return decision

    @staticmethod
    def _best(direction: str, candidates: list[tuple[str, Any]]) -> tuple[str, Any] | None:
        kept = sorted((c for c in candidates if c[1]), key=lambda c: c[1]["trial"])
        return ranking.best(direction, kept, lambda c: c[1]["value"])

    def _decision_doc(
        self, winner: tuple[str, Any] | None, hosts_read: Mapping[str, Any], absent: list[str]
    ) -> dict[str, Any]:
        return {
            "leader_nonce": self.nonce,
            "model_host": winner[0] if winner else None,
            "model_trial": winner[1]["trial"] if winner else None,
            "model_value": winner[1]["value"] if winner else None,
            "hosts": dict(hosts_read),
            "absent": list(absent),
        }

    def _post_decision(self, doc: Mapping[str, Any]) -> None:
        doc = dict(doc)
        self._call(
            lambda: self._storage.set_study_system_attr(self._study_id, self._decision_key, doc),
            "posting the hosts' decision",
        )

    def _await_done(self, liveness: _Liveness) -> tuple[dict[str, Any], list[str], list[str]]:
        """Wait until every other host is done, silent for the grace period, never joined, or,
        after SIGTERM, STOP_WAIT_S has passed since SIGTERM arrived."""
        started = self._clock()
        while True:
            records, _ = self._read()
            finished: list[str] = []
            waiting: list[str] = []
            absent: list[str] = []
            for host in self.cluster.others:
                record = records[host]
                state = (record or {}).get("state")
                if state in ("done", "closed", "failed"):
                    finished.append(host)
                elif state in (None, "starting"):  # not heard from yet: it may still be starting
                    if self._clock() - self._started > self._join_s:
                        absent.append(host)
                        logger.warning("Host %s never joined the study: not waiting for it", host)
                    else:
                        waiting.append(host)
                elif liveness.silent_for(host, record) > self._grace_s:
                    absent.append(host)
                    logger.warning(
                        "Host %s has shown no sign of life for %g s: not waiting for it", host, self._grace_s
                    )
                else:
                    waiting.append(host)
            stop_deadline = self._stop_deadline(STOP_WAIT_S)
            if waiting and stop_deadline is not None and self._clock() >= stop_deadline:
                logger.warning("Stopping: not waiting any longer for hosts %s", ", ".join(waiting))
                absent += waiting
                waiting = []
            if not waiting:
                return records, finished, absent
            if self._clock() - started > self._interval_s and int(self._clock() - started) % 30 == 0:
                logger.info("Waiting for hosts %s to finish their trials", ", ".join(waiting))
            time.sleep(POLL_S)

    def _confirmed(self, record: Mapping[str, Any] | None) -> bool:
        return bool(record) and record.get("ack") == self.nonce and bool(record.get("model"))

    def _wait_deadline(self, stop_wait_s: float) -> float:
        normal = self._clock() + self._grace_s + self._interval_s
        stop = self._stop_deadline(stop_wait_s)
        return normal if stop is None else min(normal, stop)

    def _await_confirmations(self, chosen: str, liveness: _Liveness) -> tuple[dict[str, Any], list[str]]:
        """Wait for the chosen host to confirm the proposal; the hosts that did confirm."""
        deadline = self._wait_deadline(STOP_WAIT_S + ACK_WAIT_S)
        while True:
            records, _ = self._read()
            confirmed = [h for h in self.cluster.others if self._confirmed(records[h])]
            record = records[chosen] or {}
            if chosen in confirmed or record.get("state") == "failed":
                return records, confirmed
            if liveness.silent_for(chosen, record) > self._grace_s or self._clock() >= deadline:
                return records, confirmed
            deadline = min(deadline, self._wait_deadline(STOP_WAIT_S + ACK_WAIT_S))  # SIGTERM now
            time.sleep(POLL_S)

    def _await_reads(self, doc: Mapping[str, Any], liveness: _Liveness) -> None:
        """Serve until every host has read the decision (they read it through the proxy)."""
        deadline = self._wait_deadline(STOP_WAIT_S + 2 * ACK_WAIT_S)
        pending = dict(doc["hosts"])
        while pending and self._clock() < deadline:
            records, _ = self._read()
            for host, nonce in list(pending.items()):
                record = records[host] or {}
                if record.get("state") == "closed" and record.get("nonce") == nonce:
                    del pending[host]
                elif liveness.silent_for(host, record) > self._grace_s:
                    del pending[host]
            if pending:
                deadline = min(deadline, self._wait_deadline(STOP_WAIT_S + 2 * ACK_WAIT_S))
                time.sleep(POLL_S)
        if pending:
            logger.warning("Hosts %s did not confirm the decision", ", ".join(pending))

    def _follow(self) -> Decision:
        """Wait for the leader's decision: confirm its proposals, return its final decision."""
        leader = self.cluster.leader
        liveness = _Liveness(self._clock)
        first_leader_record: Any = "unread"
        leader_seen_alive = False
        while True:
            records, doc = self._read()
            leader_record = records[leader]
            if first_leader_record == "unread":
                first_leader_record = leader_record
            elif leader_record != first_leader_record:
                leader_seen_alive = True
            current = (
                bool(doc) and bool(leader_record) and doc.get("leader_nonce") == leader_record.get("nonce")
            )
            # A decision of this run: it names this host, or the leader posted it since this host
            # began waiting (a previous run's decision cannot be told apart otherwise).
            ours = current and (doc["hosts"].get(self.cluster.current) == self.nonce or leader_seen_alive)
            if ours and doc.get("final", True):
                if doc["hosts"].get(self.cluster.current) != self.nonce:
                    logger.warning(
                        "The leader host %s decided without this host (it stopped hearing from it)", leader
                    )
                decision = _decision_from(doc)
                break
            if ours and self._record.get("ack") != doc["leader_nonce"]:
                self._post(ack=doc["leader_nonce"])  # alive and still holding its model
            silent = liveness.silent_for(leader, leader_record)
            if silent > self._grace_s:
                raise UserError(
                    f"The leader host {leader} has shown no sign of life for {silent:.0f} s "
                    "(heartbeat-grace-period): it stopped or died before deciding which host keeps the model"
                )
            stop_deadline = self._stop_deadline(self._budget_s)
            if stop_deadline is not None and self._clock() >= stop_deadline:
                logger.warning("Stopping before the leader host %s decided: this host keeps no model", leader)
                return Decision(None)
            time.sleep(POLL_S)
        self._post(state="closed")
        return decision


def job_model_line(trials_run: int, decision: Decision) -> str:
    """This host's last metric line (report.ProgressLines' format) naming the job's one model,
    so that the job's final metrics (model:trial, model:value) are the same on every host."""
    text = f"job_trials={trials_run}"
    if decision.model_trial is not None:
        text += f" model_trial={decision.model_trial} model_value={decision.model_value!r}"
    return text


def write_summary(
    output_data_dir: Path,
    cluster: Cluster,
    decision: Decision,
    model: ModelRecord | None,
    states: Mapping[str, int],
) -> Path:
    """output/data/<host>/host.json: what this host ran and whether it kept the job's model."""
    folder = output_data_dir / cluster.current
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "host": cluster.current,
        "leader": cluster.leader,
        "hosts": list(cluster.hosts),
        "trials_run": dict(states),
        "kept_model_trial": None if model is None else model.trial_number,
        "keeps_job_model": decision.keeps_model(cluster.current),
        "job_model_host": decision.model_host,
        "job_model_trial": decision.model_trial,
        "hosts_given_up_on": list(decision.absent),
    }
    path = folder / HOST_SUMMARY_FILE
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    return path
