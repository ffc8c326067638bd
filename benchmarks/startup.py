"""Start-up inside the image: from `train` starting to the first trial running, against the AWS
sample's way (pip install of Optuna and the MySQL driver when the job starts).

    .venv/bin/python benchmarks/startup.py --image IMAGE [--engine podman] [--runs 3]

Ours: the container runs `sh -c 'date +%s.%N; exec train'` on a job folder (embedded
storage, network off); the time is from that first timestamp to the log line
"Trial 0 started" (same clock: the container shares the host's).
The sample's way: the same container first runs `pip install --no-cache-dir optuna
mysql-connector-python` into a fresh folder (host network and the host's CA bundle, as a
job in a VPC with a NAT would), then the same start-up. The `sh -c` wrapper is only for
the timestamp; the image itself runs `train` with no shell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ ships in no package: the repository
from devtools.localjob import digits_channels, write_job_folder  # noqa: E402

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TRIAL_STARTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*Trial 0 started", re.M)


def engine_env(engine: str) -> dict[str, str]:
    env = dict(os.environ)
    if Path(engine).name == "podman" and "CONTAINERS_CONF" not in env:
        env["CONTAINERS_CONF"] = str(Path(__file__).parents[1] / "docker" / "containers.conf")
    return env


def first_trial_seconds(
    engine: str, image: str, job: Path, prelude: str = "", network: str = "none"
) -> float:
    script = f"date +%s.%N; {prelude}exec train"
    cmd = [engine, "run", "--rm", f"--network={network}", "-v", f"{job}:/opt/ml"]
    if prelude:
        cmd += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "-e", f"PIP_CERT={CA_BUNDLE}"]
    cmd += [image, "sh", "-c", script]
    result = subprocess.run(
        cmd, env=engine_env(engine), capture_output=True, text=True, timeout=900, check=True
    )
    started = float(result.stdout.splitlines()[0])
    match = TRIAL_STARTED.search(result.stderr)
    if match is None:
        raise RuntimeError(f"no 'Trial 0 started' line:\n{result.stderr[-2000:]}")
    first = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=dt.UTC)
    return first.timestamp() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--engine", default="podman")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-sample", action="store_true")
    args = parser.parse_args()
    channels = digits_channels()
    arms = {"ours": ("", "none")}
    if not args.skip_sample:
        pip = "pip install --quiet --no-cache-dir --target /tmp/sample optuna mysql-connector-python && "
        arms["sample's way (pip install at start)"] = (pip, "host")
    for name, (prelude, network) in arms.items():
        times = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                job = write_job_folder(Path(tmp) / "opt_ml", {"n-trials": "1", "epochs": "1"}, channels)
                times.append(first_trial_seconds(args.engine, args.image, job, prelude, network))
        print(
            f"{name}: {statistics.median(times):.2f} s to the first trial (median of {args.runs}: {', '.join(f'{t:.2f}' for t in times)})"
        )


if __name__ == "__main__":
    main()
