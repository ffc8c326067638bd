"""sagemaker-optuna: start SageMaker training jobs on one Optuna study, watch the study, find
its best model and deploy it.

Exit codes: 0 done; 1 a job or the endpoint failed, or a mistake to fix (one line on
stderr); 2 wrong usage.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from core.engines import DEFAULT_ENGINE, ENGINES
from core.errors import UserError
from hpo_study.database import region as region_mod
from launcher import aws, jobresults, jobs, output, stack, status
from launcher import best as best_mod
from launcher import deploy as deploy_mod
from launcher import launch as launch_mod
from launcher import report as report_mod
from launcher import source as source_mod
from launcher import study as study_mod
from launcher import tunnel as tunnel_mod
from launcher.constants import (
    DEFAULT_ENDPOINT_TIMEOUT_S,
    DEFAULT_MAX_RUNTIME_S,
    DEFAULT_POLL_S,
    DEFAULT_SERVING_INSTANCE,
    DEFAULT_VOLUME_GB,
    DEFAULT_WAIT_TIMEOUT_S,
    ENDPOINT_IN_SERVICE,
    HP_REGION_NAME,
    HP_STUDY_NAME,
    PROG,
    STUDY_OPTION_HPS,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
JOB_COLUMNS = ("job", "status", "secondary_status", "failure_reason")
STATUS_JOB_COLUMNS = ("job", "trials", "COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING", "best")


class UsageError(Exception):
    """Wrong usage found after parsing (an option neither given nor filled by --stack): exit 2."""


# --- argument types: a bad value is a usage error (exit 2) -------------------------------------


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return key.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


# --- the parser --------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("AWS")
    g.add_argument("--region", help="AWS region of the jobs and of the secret (default: AWS_DEFAULT_REGION)")
    g.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or the default credentials)")
    g.add_argument(
        "--stack",
        help="a stack made from infra/optuna-hpo.yaml: its outputs fill --db-secret and, for launch, "
        "--image, --role, --output, --subnet, --security-group (and --checkpoint-s3 with --spot); "
        "options given win",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return p


def _study() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("study", "where the study lives; the same values as the jobs' hyperparameters")
    g.add_argument("--study", required=True, help=f"study name (hyperparameter {HP_STUDY_NAME})")
    g.add_argument("--db-secret", help="Secrets Manager id or ARN of the database credentials")
    g.add_argument("--host", help="database host (default: the secret's 'host')")
    g.add_argument("--db-port", help="database port (default: the secret's 'port')")
    g.add_argument("--db-name", help="database name (default: the secret's 'dbname', else optuna)")
    g.add_argument(
        "--db-engine", choices=tuple(ENGINES), help=f"default: the secret's 'engine', else {DEFAULT_ENGINE}"
    )
    g.add_argument("--db-ssl-ca", help="CA bundle for verified TLS (launch: a path in the container)")
    g.add_argument(
        "--db-ssl-verify",
        choices=("true", "false"),
        help="false: do not verify an RDS endpoint against the RDS CA bundle (default true)",
    )
    g.add_argument("--storage", help="a SQLAlchemy URL without password (e.g. sqlite:///optuna-study.db)")
    return p


def _reading() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("source", source_mod.__doc__.split("\n\n")[0] if source_mod.__doc__ else None)
    g.add_argument(
        "--source",
        choices=source_mod.CHOICES,
        default=source_mod.AUTO,
        help="study: read the study database; jobs: read the study's training jobs (SageMaker metrics "
        "and S3, AWS credentials only); auto (default): the database with --host/--storage or when it "
        "answers, else the jobs",
    )
    g.add_argument(
        "--job-prefix",
        help="with the jobs as source: the study's jobs are those whose name contains this "
        "(default: the study name, as launch names them) and whose study-name is --study",
    )
    return p


def _waiting(timeout_s: float) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("waiting")
    g.add_argument("--wait", action="store_true", help="wait until done and report")
    g.add_argument(
        "--timeout", type=_seconds, default=timeout_s, help=f"seconds to wait (default {timeout_s:g})"
    )
    g.add_argument(
        "--poll",
        type=_seconds,
        default=DEFAULT_POLL_S,
        help=f"seconds between checks (default {DEFAULT_POLL_S:g})",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common, study = _common(), _study()

    p = sub.add_parser(
        "launch",
        parents=[common, study, _waiting(DEFAULT_WAIT_TIMEOUT_S)],
        help="start N training jobs on one study",
        description=launch_mod.__doc__,
    )
    p.add_argument("--jobs", type=_positive_int, default=1, help="training jobs to start (default 1)")
    p.add_argument(
        "--instances", type=_positive_int, default=1,
        help="hosts per job (instance_count, default 1): one study, one model per job; without a "
        "database the job's first host serves its study to the others",
    )  # fmt: skip
    p.add_argument("--image", help="the image URI in ECR (required without --stack)")
    p.add_argument("--role", help="ARN of the training role (required without --stack)")
    p.add_argument(
        "--output", help="s3:// prefix for model.tar.gz and output.tar.gz (required without --stack)"
    )
    p.add_argument(
        "--channel", type=_key_value, action="append", default=[], metavar="NAME=S3URI",
        help="an input channel (train and test are needed); repeat",
    )  # fmt: skip
    p.add_argument(
        "--hp", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="a hyperparameter (docs/hyperparameters.md); repeat",
    )  # fmt: skip
    p.add_argument("--hyperparameters", type=Path, help="a JSON object of hyperparameters")
    p.add_argument("--instance-type", required=True, help="e.g. ml.m5.large")
    p.add_argument("--volume-size", type=_positive_int, default=DEFAULT_VOLUME_GB, help="GB per instance")
    p.add_argument("--max-runtime", type=_positive_int, default=DEFAULT_MAX_RUNTIME_S, help="seconds per job")
    p.add_argument("--subnet", action="append", default=[], help="VPC subnet id; repeat")
    p.add_argument("--security-group", action="append", default=[], help="VPC security group id; repeat")
    p.add_argument("--spot", action="store_true", help="managed spot training (needs --checkpoint-s3)")
    p.add_argument("--checkpoint-s3", help="s3:// prefix; each job checkpoints to <prefix>/<job name>")
    p.add_argument("--max-wait", type=_positive_int, help="spot: seconds to wait for capacity + run")
    p.add_argument("--job-prefix", help="job names are <prefix>-<UTC timestamp>-<i> (default: the study)")
    p.add_argument("--tag", type=_key_value, action="append", default=[], metavar="KEY=VALUE", help="repeat")
    p.add_argument("--dry-run", action="store_true", help="print the CreateTrainingJob requests, send none")
    p.set_defaults(handler=cmd_launch)

    p = sub.add_parser(
        "status",
        parents=[common, study, _reading()],
        help="trials by state, the best so far, and each job's share",
        description=status.__doc__,
    )
    p.add_argument("--describe-jobs", action="store_true", help="add each job's SageMaker status")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "best",
        parents=[common, study, _reading()],
        help="the best trial and the S3 URI of its model.tar.gz",
        description=best_mod.__doc__,
    )
    p.add_argument("--no-verify", action="store_true", help="do not read model.json from model.tar.gz")
    p.set_defaults(handler=cmd_best)

    p = sub.add_parser(
        "deploy",
        parents=[common, study, _reading(), _waiting(DEFAULT_ENDPOINT_TIMEOUT_S)],
        help="serve the best model from a SageMaker endpoint",
        description=deploy_mod.__doc__,
    )
    p.add_argument("--endpoint-name", help="default: the study name")
    p.add_argument(
        "--instance-type", default=DEFAULT_SERVING_INSTANCE, help=f"default {DEFAULT_SERVING_INSTANCE}"
    )
    p.add_argument("--instance-count", type=_positive_int, default=1)
    p.add_argument("--image", help="default: the image that trained the model")
    p.add_argument("--role", help="model execution role ARN (default: the training job's role)")
    p.add_argument("--no-verify", action="store_true", help="do not read model.json from model.tar.gz")
    p.set_defaults(handler=cmd_deploy)

    p = sub.add_parser(
        "report",
        parents=[common, study],
        help="draw the study's plots and write trials.csv and best_trial.json into a folder",
        description=report_mod.__doc__,
    )
    p.add_argument("--out", type=Path, default=Path("study-report"), help="folder (default study-report)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser(
        "tunnel",
        parents=[common],
        help="forward a local port to the study database through the stack's SSM access instance",
        description=tunnel_mod.__doc__,
    )
    p.add_argument(
        "--local-port",
        type=_positive_int,
        default=tunnel_mod.DEFAULT_LOCAL_PORT,
        help=f"default {tunnel_mod.DEFAULT_LOCAL_PORT}",
    )
    p.add_argument("--dry-run", action="store_true", help="print the aws ssm command, run nothing")
    p.set_defaults(handler=cmd_tunnel)
    return parser


# --- subcommands -------------------------------------------------------------------------------


def _print(args: argparse.Namespace, document: Any, text: str) -> None:
    print(output.to_json(document) if args.json else text)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _study_options(args: argparse.Namespace) -> dict[str, object]:
    return {dest: getattr(args, dest) for dest in STUDY_OPTION_HPS}


def _file_hyperparameters(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read --hyperparameters {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"--hyperparameters {path} must hold a JSON object")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in doc.items()}


def _secret_region(args: argparse.Namespace, region: str | None) -> list[tuple[str, str]]:
    """``region-name`` for the jobs when --db-secret is a name, not an ARN (an ARN names its
    region, which the job reads from it: hpo_study/database/region.py): the command's own region."""
    if not args.db_secret or region_mod.arn_region(args.db_secret) or not region:
        return []
    given = {launch_mod.canonical(k) for k, _ in args.hp} | {
        launch_mod.canonical(k) for k in _file_hyperparameters(args.hyperparameters)
    }
    return [] if HP_REGION_NAME in given else [(HP_REGION_NAME, region)]


def launch_spec(args: argparse.Namespace, region: str | None = None) -> launch_mod.LaunchSpec:
    """The command line (after --stack) -> a LaunchSpec (not validated yet); ``region``: the
    command's region, passed to the jobs with a secret given by name."""
    missing = [f"--{dest}" for dest in ("image", "role", "output") if not getattr(args, dest)]
    if missing:
        raise UsageError(f"launch needs {', '.join(missing)} (or --stack, whose outputs provide them)")
    channels: dict[str, str] = {}
    for name, uri in args.channel:
        if name in channels:
            raise UserError(f"Channel '{name}' is given twice")
        channels[name] = uri
    hps = launch_mod.merge_hyperparameters(
        study_mod.hyperparameters(args.study, _study_options(args)).items(),
        _file_hyperparameters(args.hyperparameters).items(),
        args.hp,
        _secret_region(args, region),
    )
    return launch_mod.LaunchSpec(
        hyperparameters=hps,
        image=args.image,
        role_arn=args.role,
        output_path=args.output,
        channels=channels,
        instance_type=args.instance_type,
        jobs=args.jobs,
        instance_count=args.instances,
        volume_gb=args.volume_size,
        max_runtime_s=args.max_runtime,
        subnets=tuple(args.subnet),
        security_groups=tuple(args.security_group),
        spot=args.spot,
        max_wait_s=args.max_wait,
        checkpoint_s3=args.checkpoint_s3,
        job_prefix=args.job_prefix,
        tags=dict(args.tag),
    )


def _session(args: argparse.Namespace) -> Any:
    """The command's one AWS session, and the options --stack fills."""
    session = aws.session(args.region, args.profile)
    stack.apply(args, session)
    return session


def cmd_launch(args: argparse.Namespace) -> int:
    session = _session(args)
    spec = launch_spec(args, session.region_name)
    if args.dry_run:
        print(output.to_json(launch_mod.requests(spec)))
        return EXIT_OK
    names = launch_mod.launch(session, spec)
    if not args.wait:
        rows = [{"job": n, "status": "created"} for n in names]
        _print(args, {"study": spec.study_name, "jobs": rows}, output.table(rows, ("job", "status")))
        return EXIT_OK
    _note(
        f"Started {len(names)} jobs on study '{spec.study_name}'; waiting (Ctrl-C stops waiting, not the jobs)"
    )
    states = jobs.wait(
        aws.client(session, "sagemaker"),
        names,
        args.timeout,
        args.poll,
        on_change=lambda s: _note(
            f"{s.name}: {s.status}" + (f" ({s.secondary_status})" if s.secondary_status else "")
        ),
    )
    rows = [s.row() for s in states]
    _print(args, {"study": spec.study_name, "jobs": rows}, output.table(rows, JOB_COLUMNS))
    running = [s.name for s in states if not s.ended]
    if running:
        _note(f"Still running after {args.timeout:g} s: {', '.join(running)}")
    return EXIT_OK if jobs.all_completed(states) else EXIT_FAILED


def _status_text(doc: dict[str, Any], with_jobs: bool) -> str:
    states = ", ".join(f"{state} {n}" for state, n in doc["states"].items())
    lines = [f"Study '{doc['study']}' ({doc['direction']}): {doc['trials']} trials: {states}"]
    best = doc["best"]
    if best is None:
        lines.append("Best: no completed trial yet")
    else:
        lines.append(
            f"Best: trial {best['trial']}, value {output.cell(best['value'])}, "
            f"job {output.cell(best['job'])}, params {json.dumps(best['params'], sort_keys=True)}"
        )
    columns = STATUS_JOB_COLUMNS + (("status", "failure_reason") if with_jobs else ())
    lines += ["", output.table(doc["jobs"], columns)]
    return "\n".join(lines)


def _source(args: argparse.Namespace, session: Any) -> tuple[Any, source_mod.Source]:
    settings = study_mod.settings(args.study, _study_options(args))
    source = source_mod.choose(args.source, settings, session)
    _note(f"Source: {source.why}")
    return settings, source


def cmd_status(args: argparse.Namespace) -> int:
    session = _session(args)
    settings, source = _source(args, session)
    if not source.is_study:
        doc = jobresults.status(
            aws.client(session, "sagemaker"),
            aws.client(session, "s3"),
            aws.client(session, "cloudwatch"),
            args.study,
            args.job_prefix,
            _database(args),
        )
        _print(args, doc, jobresults.status_text(doc))
        return EXIT_OK
    sagemaker = aws.client(session, "sagemaker") if args.describe_jobs else None
    with study_mod.opened(settings, session) as study:
        doc = {"source": source.why, **status.summary(study, sagemaker)}
    _print(args, doc, _status_text(doc, args.describe_jobs))
    return EXIT_OK


def _database(args: argparse.Namespace) -> dict[str, str]:
    """The database options given (or filled by --stack), by hyperparameter name: the jobs
    source keeps only the jobs given the same (launcher/jobresults.py)."""
    return {
        hp: getattr(args, dest)
        for dest, hp in STUDY_OPTION_HPS.items()
        if hp in jobresults.DATABASE_HPS and getattr(args, dest)
    }


def _find_best(args: argparse.Namespace) -> tuple[Any, best_mod.BestModel, str]:
    session = _session(args)
    settings, source = _source(args, session)
    sagemaker = aws.client(session, "sagemaker")
    s3 = None if args.no_verify else aws.client(session, "s3")
    if not source.is_study:
        found, notes = jobresults.find_best(
            sagemaker, s3, aws.client(session, "cloudwatch"), args.study, args.job_prefix, _database(args)
        )
        for note in notes:
            _note(f"Note: {note}")
        return sagemaker, found, source.why
    with study_mod.opened(settings, session) as study:
        return sagemaker, best_mod.find(study, sagemaker, s3), source.why


def _lines(doc: dict[str, Any]) -> str:
    width = max(len(k) for k in doc)
    return "\n".join(
        f"{k.ljust(width)}  {json.dumps(v, sort_keys=True) if isinstance(v, dict) else output.cell(v)}"
        for k, v in doc.items()
    )


def cmd_best(args: argparse.Namespace) -> int:
    _, found, source = _find_best(args)
    doc = {**found.as_dict(), "source": source}
    _print(args, doc, _lines(doc))
    return EXIT_OK


def cmd_deploy(args: argparse.Namespace) -> int:
    sagemaker, found, source = _find_best(args)
    spec = deploy_mod.DeploySpec(
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        endpoint_name=args.endpoint_name,
        image=args.image,
        role_arn=args.role,
    )
    done = deploy_mod.deploy(sagemaker, found, spec)
    if args.wait:
        _note(f"Endpoint {done.endpoint_name} created; waiting until it is in service")
        done = deploy_mod.wait_in_service(sagemaker, done, args.timeout, args.poll)
    doc = {"trial": found.trial_number, "value": found.value, "source": source, **done.as_dict()}
    _print(args, doc, _lines(doc))
    return EXIT_OK if not args.wait or done.status == ENDPOINT_IN_SERVICE else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    session = _session(args)
    settings = study_mod.settings(args.study, _study_options(args))
    with study_mod.opened(settings, session) as study:
        written = report_mod.write(study, args.out)
    _print(args, [str(p) for p in written], "\n".join(str(p) for p in written))
    return EXIT_OK


def cmd_tunnel(args: argparse.Namespace) -> int:
    if not args.stack:
        raise UsageError("tunnel needs --stack (a stack made with EnableSsmAccess=true)")
    session = aws.session(args.region, args.profile)
    tunnel = tunnel_mod.from_outputs(
        stack.outputs(session, args.stack), args.stack, args.local_port, session.region_name, args.profile
    )
    options = " ".join(tunnel.options)
    if args.dry_run:
        _print(args, tunnel.as_dict(), f"{shlex.join(tunnel.command())}\nthen pass: {options}")
        return EXIT_OK
    _note(
        f"Forwarding {tunnel_mod.LOCAL_HOST}:{tunnel.local_port} to {tunnel.db_host}:{tunnel.db_port} "
        f"through {tunnel.instance_id}; Ctrl-C closes it. In another terminal, pass: {options}"
    )
    print(options, flush=True)
    code = tunnel_mod.run(tunnel)
    return EXIT_OK if code == 0 else EXIT_FAILED


# --- entry point -------------------------------------------------------------------------------


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, run one subcommand, map a user error to one line and exit code 1."""
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (jobs and endpoints already created keep running)", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> None:
    """The ``sagemaker-optuna`` console script."""
    sys.exit(run(argv))
