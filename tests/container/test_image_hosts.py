"""The image as SageMaker runs a job of 3 hosts: 3 containers on one network, each with its host
name, its own /opt/ml and a resourceconfig.json naming all three."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from devtools.localjob import write_job_folder
from tests.support.engine import JOB_TIMEOUT, Engine


@pytest.mark.container
def test_three_containers_share_one_study_and_leave_one_model(
    engine: Engine, image: str, small_digits, tmp_path
):
    suffix = uuid.uuid4().hex[:8]
    network, subnet = f"pytest-hosts-{suffix}", f"10.{random.randint(90, 250)}.{random.randint(1, 250)}"
    hosts = ["algo-1", "algo-2", "algo-3"]
    address = {h: f"{subnet}.{10 + i}" for i, h in enumerate(hosts, start=1)}
    names = {h: f"pytest-{h}-{suffix}" for h in hosts}
    hps = {"n-trials": "2", "epochs": "2", "seed": "1", "db-retry-timeout": "120"}
    bases = {}
    for host in hosts:
        base = write_job_folder(tmp_path / host, hps, small_digits)
        (base / "input/config/resourceconfig.json").write_text(
            json.dumps({"current_host": host, "hosts": hosts, "network_interface_name": "eth0"})
        )
        bases[host] = base
    engine("network", "create", "--subnet", f"{subnet}.0/24", network)
    try:
        for host in hosts:
            others = [f"--add-host={h}:{address[h]}" for h in hosts if h != host]
            engine(
                "run", "-d", "--name", names[host], "--hostname", host, "--network", network,
                "--ip", address[host], *others, "-e", "TRAINING_JOB_NAME=three-hosts",
                "-v", f"{bases[host]}:/opt/ml", image, "train",
            )  # fmt: skip
        codes = {h: int(engine("wait", names[h], timeout=JOB_TIMEOUT).stdout.strip()) for h in hosts}
        logs = {h: engine("logs", names[h], check=False) for h in hosts}
        assert codes == {h: 0 for h in hosts}, {h: (r.stdout + r.stderr)[-3000:] for h, r in logs.items()}
    finally:
        engine.remove(*names.values())
        engine("network", "rm", "-f", network, check=False)

    # The leader listened on its interface's address only, not on every interface.
    assert f"on {address['algo-1']}:13000" in logs["algo-1"].stdout + logs["algo-1"].stderr
    models = [h for h in hosts if any((bases[h] / "model").iterdir())]
    assert len(models) == 1
    best = json.loads((bases["algo-1"] / "output/data/best_trial.json").read_text())
    meta = json.loads((bases[models[0]] / "model/model.json").read_text())
    assert meta["trial_number"] == best["number"]
    for host in hosts:
        summary = json.loads((bases[host] / "output/data" / host / "host.json").read_text())
        assert summary["trials_run"] and summary["keeps_job_model"] == (host == models[0])
        if host != "algo-1":
            assert sorted(p.name for p in (bases[host] / "output/data").iterdir()) == [host]
