"""The training entry point: ``SAGEMAKER_TRAINING_MODULE=entrypoint.train:main``.

The image's ``train`` command (entrypoint/cli.py) imports this module and calls :func:`main`. A
:class:`~core.errors.UserError` becomes a short failure file and exit code 1 (entrypoint/job/failure.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from core.artifact import ModelSource
from core.errors import UserError
from entrypoint.constants import (
    CHANNEL_CODE,
    CHECKPOINT_DIR,
    ENV_TRAINING_JOB_NAME,
    LOCAL_JOB_NAME,
    PROXY_PORT,
    SUBMIT_DIRECTORY_HYPERPARAMETER,
)
from entrypoint.job import failure, hyperparameters
from entrypoint.job import smpaths as environment  # the toolkit's paths without its boto3 import
from entrypoint.job.context import JobContext
from entrypoint.job.stopping import Guard
from entrypoint.model.checkpoint import Progress
from entrypoint.model.keeper import BestModelKeeper
from entrypoint.multihost import hosts, proxy
from entrypoint.study import join
from entrypoint.trials import builtin, data, search, usermodule
from entrypoint.trials.objective import Objective
from entrypoint.trials.progress import ProgressLines
from entrypoint.trials.runner import TrialRunner
from hpo_study import optuna_private, report
from hpo_study.database import locate
from hpo_study.database.dberrors import Retrier, StorageUnreachable, describe, is_auth_failure
from hpo_study.database.redact import redacting
from hpo_study.settings import Settings

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JobPaths:
    model_dir: Path
    output_data_dir: Path
    channels: dict[str, str]
    checkpoint_dir: Path | None = None  # exists only when checkpointing (managed spot) is on
    code_dir: Path | None = None  # the Estimator's source_dir, for model-module

    @property
    def checkpoints(self) -> Path | None:
        return (
            self.checkpoint_dir if self.checkpoint_dir is not None and self.checkpoint_dir.is_dir() else None
        )

    def folders(self) -> dict[str, Path | None]:
        """The folders the job writes, by the name a failure gives them."""
        return {
            "model folder": self.model_dir,
            "output data folder": self.output_data_dir,
            "checkpoint folder": self.checkpoints,
        }


FINAL_DB_RETRY_S = 30.0  # after SIGTERM the whole wrap-up must fit in SageMaker's 120 s


def run(
    settings: Settings,
    paths: JobPaths,
    job_name: str,
    guard: Guard | None = None,
    cluster: hosts.Cluster | None = None,
) -> optuna.Study:
    """Join the study, run this job's trials, keep the best model, write the summary.

    ``cluster``: the job's hosts when it has several (entrypoint/multihost/hosts.py), else None.
    """
    guard = guard or Guard()
    if cluster is not None:  # every host syncs its checkpoints to the job's one S3 prefix
        paths = dataclasses.replace(paths, checkpoint_dir=hosts.host_folder(paths.checkpoints, cluster))
    failure.check_writable(paths.folders())  # before any trial: a read-only model_dir is found now
    if settings.install_requirements and paths.code_dir is not None:
        usermodule.install_requirements(paths.code_dir)
    spec = usermodule.load(settings.model_module, paths.code_dir or ".")
    usermodule.check_origin(spec, paths.code_dir or ".")
    dataset = data.load(paths.channels)
    logger.info(
        "Data: %d training and %d test examples, %d features, %d classes",
        len(dataset.train.y),
        len(dataset.test.y),
        dataset.n_features,
        dataset.n_classes,
    )
    job = JobContext(settings, job_name, guard, None if cluster is None else cluster.current)
    if cluster is not None and not settings.uses_shared_storage:
        return _run_served(job, cluster, paths, dataset, spec)
    # With checkpointing on, an embedded study lives in the checkpoint folder so that a
    # restarted spot job finds it; it is copied to the output data folder at the end.
    db = locate.resolve(settings, paths.checkpoints or paths.output_data_dir)
    with redacting(db.password):
        return _run_on(job, db, paths, dataset, spec, cluster)


def _run_on(
    job: JobContext,
    db: locate.Database,
    paths: JobPaths,
    dataset: data.Dataset,
    spec: usermodule.ModelSpec,
    cluster: hosts.Cluster | None = None,
) -> optuna.Study:
    settings = job.settings
    sampler, pruner = search.make_sampler(settings, job.seed), search.make_pruner(settings)
    baseline = builtin.BASELINE_PARAMS if settings.baseline_trial and spec.module is None else None
    study, rdb = join.join_study(settings, db, sampler, pruner, job.guard.stop, job.retry, baseline)
    if cluster is not None and cluster.is_leader:  # hosts on a database: one study, one model
        hosts.reset(
            optuna_private.storage_of(study), optuna_private.study_id(study), job.name, cluster, job.retry
        )
    return _run_study(
        job,
        study,
        rdb,
        db,
        paths,
        dataset,
        spec,
        cluster,
        lambda limit_s: _wrap_up(study, db, paths, job.retry, limit_s),
    )


def _run_served(
    job: JobContext,
    cluster: hosts.Cluster,
    paths: JobPaths,
    dataset: data.Dataset,
    spec: usermodule.ModelSpec,
) -> optuna.Study:
    """A job of several hosts with an embedded study: the leader keeps it and serves it with
    Optuna's gRPC proxy (entrypoint/multihost/proxy.py); every host runs its trials through the proxy."""
    settings = job.settings
    sampler, pruner = search.make_sampler(settings, job.seed), search.make_pruner(settings)
    with contextlib.ExitStack() as stack:
        wrap_up: Callable[[float], None] = lambda limit_s: None  # noqa: E731
        tell_failed: Callable[[str], None] = lambda reason: None  # noqa: E731
        address: str | None = None
        if cluster.is_leader:
            db = locate.resolve(settings, paths.checkpoints or paths.output_data_dir)
            baseline = builtin.BASELINE_PARAMS if settings.baseline_trial and spec.module is None else None
            served, _ = join.join_study(settings, db, sampler, pruner, job.guard.stop, job.retry, baseline)
            hosts.reset(
                optuna_private.storage_of(served),
                optuna_private.study_id(served),
                job.name,
                cluster,
                job.retry,
            )
            address = hosts.bind_address(cluster)
            server = stack.enter_context(
                proxy.ProxyServer(served, address, PROXY_PORT, settings.heartbeat_interval)
            )

            def wrap_up(limit_s: float) -> None:
                with server.lock:
                    _wrap_up(served, db, paths, job.retry, limit_s)

            def tell_failed(reason: str) -> None:  # the workers' next call fails quoting it
                server.fail(reason, min(2 * settings.heartbeat_interval, proxy.MAX_FAILED_LINGER_S))

        # The leader connects to the address its server bound (hosts.bind_address may fall back
        # to the interface's address when its own name resolves elsewhere, e.g. to loopback).
        client = proxy.ProxyClient(
            cluster.leader,
            PROXY_PORT,
            proxy.call_timeout(settings.db_retry_timeout),
            address if cluster.is_leader else None,
            job.guard.stop,
        )
        stack.callback(client.close)
        try:
            study = job.retry(
                lambda: optuna.load_study(
                    study_name=settings.study_name, storage=client, sampler=sampler, pruner=pruner
                ),
                "opening the study",
            )
        except StorageUnreachable as exc:
            raise UserError(f"Cannot open the study: {exc}") from None
        return _run_study(
            job, study, client, None, paths, dataset, spec, cluster, wrap_up, client.shown, tell_failed
        )


def _run_study(
    job: JobContext,
    study: optuna.Study,
    rdb: Any,
    db: locate.Database | None,
    paths: JobPaths,
    dataset: data.Dataset,
    spec: usermodule.ModelSpec,
    cluster: hosts.Cluster | None,
    wrap_up: Callable[[float], None],
    shown: str | None = None,
    tell_failed: Callable[[str], None] = lambda reason: None,
) -> optuna.Study:
    """Run this host's trials on a joined study. ``db``: the database it is on (None through
    the proxy); ``wrap_up(limit_s)`` writes the study-wide report."""
    settings, job_name = job.settings, job.name
    shown = shown or (db.shown if db is not None else "")
    model_dir = paths.model_dir
    if cluster is not None:
        # A host keeps its best model aside, and only the host chosen at the end puts it in
        # model_dir: a host that dies leaves nothing there, and SDK local mode, which gives all
        # hosts one model folder, sees no clash.
        model_dir = Path(tempfile.mkdtemp(prefix="host-model-"))
    progress = Progress(paths.checkpoints, study.study_name, job_name)
    progress.set_aside_bad_model()
    progress.restore_model(model_dir)
    objective = Objective(job, dataset, spec)
    for folder in (model_dir, progress.model_dir):  # serving rebuilds the network from it
        if folder is not None:
            usermodule.pack(spec, folder)
    keeper = BestModelKeeper(
        model_dir,
        study.direction,
        objective.trained,
        source=ModelSource(
            study_name=study.study_name,
            job_name=job_name,
            n_features=dataset.n_features,
            n_classes=dataset.n_classes,
            objective_metric=settings.objective_metric,
            direction=settings.direction,
            model_module=spec.module_name,
        ),
        mirror_dir=progress.model_dir,
    )
    logger.info(
        "Job %s%s joins study '%s' on %s: %d of %d trials to run",
        job_name,
        "" if cluster is None else f" (host {cluster.current} of {len(cluster.hosts)})",
        study.study_name,
        shown,
        max(settings.n_trials - len(progress.finished), 0),
        settings.n_trials,
    )
    lines = ProgressLines(keeper, progress.finished)
    runner = TrialRunner(job, study, rdb, objective, progress, [keeper, lines])
    if cluster is None:
        try:
            runner.run()
        except Exception as exc:
            _raise_refused(db, exc)
            raise
        finally:
            # After SIGTERM with the database away, the summary gets one try: the time left before
            # SageMaker's SIGKILL is better spent exiting than waiting for a stalled server.
            wrap_up(0.0 if runner.stopped_in_outage else FINAL_DB_RETRY_S)
            _closing_lines(keeper, lines.line())
        _check_outcome(runner, keeper, job.guard)
        return study
    roster = hosts.Roster(
        cluster,
        job_name,
        optuna_private.storage_of(study),
        optuna_private.study_id(study),
        settings.heartbeat_interval,
        settings.heartbeat_grace_period,
        job.retry,
        job.guard,
    )
    with roster:
        try:
            runner.run()
        except BaseException as exc:
            roster.failed()
            if isinstance(exc, Exception):
                tell_failed(str(exc) if isinstance(exc, UserError) else describe(exc))
            _raise_refused(db, exc)
            raise
        try:
            decision = roster.finish(keeper.record, settings.direction)
        except StorageUnreachable as exc:
            raise UserError(
                f"The study's leader host stopped answering before the hosts agreed which one keeps "
                f"the model (db-retry-timeout {settings.db_retry_timeout:g} s): {exc}"
            ) from None
    if decision.keeps_model(cluster.current):
        hosts.publish_model(model_dir, paths.model_dir)
    if cluster.is_leader:
        wrap_up(0.0 if runner.stopped_in_outage else FINAL_DB_RETRY_S)  # the study-wide report, once
    hosts.write_summary(paths.output_data_dir, cluster, decision, keeper.record, runner.states)
    if not decision.keeps_model(cluster.current):
        logger.info("Host %s keeps the job's model; this host's model_dir is left empty", decision.model_host)
    # Every host's last metric line names the job's one model, whichever host's log is read.
    print(hosts.job_model_line(len(progress.finished), decision), flush=True)
    gc.freeze()
    _check_outcome(runner, keeper, job.guard)
    return study


def _raise_refused(db: locate.Database | None, exc: BaseException) -> None:
    """A refused login (also after the secret was read again): one clear line."""
    if db is not None and isinstance(exc, Exception) and is_auth_failure(exc):
        raise locate.refused(db, exc) from exc


def _check_outcome(runner: TrialRunner, keeper: BestModelKeeper, guard: Guard) -> None:
    """A job that ran trials, some failed and none completed, fails. One that had nothing to run
    does not, nor one whose trials were all pruned (other jobs found better: normal in a study)."""
    if keeper.record is not None or guard.stopping or (runner.ran and not runner.last_failure):
        return
    if runner.ran == 0:
        logger.warning(
            "This job had nothing to run (its n-trials, the study's max-trials or its timeout was "
            "already used up): model_dir holds no model; the study's best model is in the "
            "model.tar.gz of the job named on its best trial"
        )
        return
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(runner.states.items()))
    raise UserError(
        f"None of the {runner.ran} trials this job ran completed ({counts}); "
        f"last failure: {runner.last_failure}"
    )


def _wrap_up(
    study: optuna.Study,
    db: locate.Database,
    paths: JobPaths,
    retry: Retrier,
    limit_s: float = FINAL_DB_RETRY_S,
) -> None:
    """The summary files; runs after success, failure and SIGTERM alike (for a job of several
    hosts: on the leader, once).

    No plots here: drawing them takes seconds that a stopped job does not have. The study's
    trials are already in Optuna's cache (the sampler read them), so the summary costs one
    query. ``sagemaker-optuna report`` draws the plots from the study.
    """
    try:
        best = retry(  # also after SIGTERM, within the outage's deadline and limit_s
            lambda: report.write(study, paths.output_data_dir),
            "writing the report",
            limit_s=limit_s,
            stoppable=False,
        )
    except Exception as exc:  # the study may be unreachable; the model is already safe
        logger.error(
            "Not written: the study summary (trials.csv, best_trial.json; `sagemaker-optuna report` "
            "writes it from the study later): %s",
            describe(exc),
        )
        logger.debug("The summary's error", exc_info=exc)
        best = None
    if db.kind == "sqlite" and paths.checkpoints is not None:
        locate.copy_embedded(db, paths.output_data_dir)
    if best is not None:
        print(f"best_trial={best.number} best_value={best.value!r} params={best.params}")


def _closing_lines(keeper: BestModelKeeper, progress_line: str) -> None:
    # The study's best as this job sees it (best_trial=, printed by _wrap_up), and this job's own
    # model: the last values of the metrics best:trial, best:value, job:trials, model:trial,
    # model:value (FinalMetricDataList).
    print(progress_line, flush=True)
    if keeper.record is None:
        logger.warning("No trial of this job completed: model_dir holds no model")
    # The process exits next. Python's final garbage collections walk every object that
    # Chainer, Optuna and SQLAlchemy created (1.2-1.9 s measured under load); frozen objects
    # are skipped. Objects created later (a caller that goes on, such as a test) are collected.
    gc.freeze()


def _submit_directory() -> str | None:
    """The SDK's ``sagemaker_submit_directory`` (a JSON-encoded string), if the job has one."""
    with open(environment.hyperparameters_file_dir, encoding="utf-8") as f:
        raw = json.load(f).get(SUBMIT_DIRECTORY_HYPERPARAMETER)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw


def _channel_names() -> list[str]:
    try:
        return list(environment.read_input_data_config())
    except FileNotFoundError:  # a hand-made local folder: take the channel folders present
        data_dir = Path(environment.channel_path("x")).parent
        return sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []


def main() -> None:
    """The training function the image's ``train`` (entrypoint/cli.py) calls.

    Every failure ends here as one line in the failure file and SystemExit(1) (failure.py). Not
    for the sagemaker-training toolkit's own ``train``: its ``finally`` exits 0 after a
    SystemExit, so a failed job would report success.
    """
    guard = Guard()
    guard.install()  # first: PID 1 drops a SIGTERM it has no handler for
    output_dir = Path(environment.output_dir)
    folders: dict[str, Path | None] = {"output folder": output_dir}
    try:
        paths = _paths()
        folders = {**paths.folders(), "output folder": output_dir}
        _main(guard, paths, output_dir)
    except BaseException as exc:  # SystemExit too: a sys.exit(0) in user code must not pass for success
        failure.fail(exc, output_dir, folders)


def _paths() -> JobPaths:
    return JobPaths(
        model_dir=Path(environment.model_dir),
        output_data_dir=Path(environment.output_data_dir),
        channels={name: environment.channel_path(name) for name in _channel_names()},
        checkpoint_dir=Path(environment.base_dir) / CHECKPOINT_DIR,
        code_dir=Path(environment.code_dir),
    )


def _main(guard: Guard, paths: JobPaths, output_dir: Path) -> None:
    # The toolkit's paths honour SAGEMAKER_BASE_DIR. We do not build its Environment object:
    # it logs every hyperparameter value that is not JSON.
    settings = hyperparameters.load(environment.hyperparameters_file_dir)
    cluster = hosts.read(_resource_config())
    if settings.model_module:
        usermodule.fetch_source(_submit_directory(), environment.code_dir)
    # After the fetch: SDK v3's code channel is the source folder only when /opt/ml/code is empty.
    paths = dataclasses.replace(
        paths, code_dir=usermodule.source_folder(paths.code_dir, Path(environment.channel_path(CHANNEL_CODE)))
    )
    # Outside SageMaker one fixed name, so that a local run with a seed repeats exactly (the
    # seed derives from it); give each of several local jobs on one study its own name.
    job_name = os.environ.get(ENV_TRAINING_JOB_NAME) or LOCAL_JOB_NAME
    failure.check_writable({"output folder": output_dir})  # where the failure file goes
    run(settings, paths, job_name, guard, cluster)


def _resource_config() -> dict | None:
    try:
        return environment.read_resource_config()
    except FileNotFoundError:  # a hand-made local folder: one host
        return None
