"""Benchmark `serve`, old and new arrangement side by side: throughput, tail, and /ping under stress.

    .venv/bin/python benchmarks/serving_bench.py [--rounds 5] [--seconds 2] [--stress-rounds 2] [--client auto|wrk|python]

Starts the real `serve` twice on 127.0.0.1, with a 784-wide model written in the training
format (random weights) and one worker per CPU:
  - old: SERVING_PROXY=none, sync gunicorn workers on the port (the arrangement before nginx);
  - new: the default, nginx buffering requests and balancing them across gthread workers, each
    on a unix socket of its own, running one request at a time, with a thread of its own for
    /ping; idle upstream connections kept alive;
  - new with SERVING_THREADS=16: the same with 16 request threads per worker (the default
    before), so that requests run side by side.
Part 1, throughput: /invocations with five 28x28 images as .npy, and the bare POST /bare
(switched on for the benchmark: reads the body like /invocations, answers an empty 200: the
server's own cost), each at concurrency 1 and 8 with a closed loop (each connection sends its
next request when the previous answer is in), interleaved (round by round, each arrangement and
endpoint in turn) so that all see the same background load:
  - wrk (`apt-get install -y wrk`), used when on PATH: a C client, so the CPUs go to the
    server; its latency starts when the request is written (connecting is not counted);
  - else a Python client: threads over http.client, latency including the connect. Its own CPU
    use (~0.2 ms a request, under one GIL) competes with the server and inflates the tail.
Part 2, /ping under stress, arrangements alternating: 64 connections sending their headers a
byte a second, 16 sending 5 MB bodies a kilobyte a second, and 16 clients POSTing 5 MB CSV
batches (11000 x 64) in a loop to a 64-wide model's server; meanwhile 10 sequential pings,
each given 5 s. SageMaker's health check gives 2 s.
Prints Markdown tables, the load average, and the model's bare forward time in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving import constants as C
from serving import media

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # devtools/ ships in no package: the repository
from devtools.localmodel import DEFAULT_PARAMS, write_model  # noqa: E402
from devtools.localserver import LOCALHOST, LocalServer  # noqa: E402
from devtools.stress import BatchLoad, SlowClients, ping_latencies  # noqa: E402

N_IMAGES, SIDE, N_CLASSES = 5, 28, 10
CONCURRENCIES = (1, 8)
WARMUP_SECONDS = 1.0
FORWARD_REPEATS = 2000
ENV_BODY_FILE = "BENCH_BODY"  # tells the wrk script where the body is
ARRANGEMENTS = {  # name -> extra environment of `serve`
    "old (sync, no proxy)": {C.ENV_PROXY: C.PROXY_NONE},
    "new (nginx + gthread)": {},
    # The same with 16 request threads per worker (the default before): requests side by side.
    "new, SERVING_THREADS=16": {C.ENV_THREADS: "16"},
}
SLOW_HEADERS, SLOW_BODIES, BATCH_CLIENTS = 64, 16, 16
STRESS_ROWS, STRESS_FEATURES = 11000, 64  # a 4.8 MB CSV body
PINGS, PING_TIMEOUT, PING_LIMIT = 10, 5.0, 2.0

Result = dict[str, float]
Load = Callable[[int, str, bytes, int, float], Result]

WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-npy"
wrk.headers["Accept"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status, latency:percentile(50), latency:percentile(99)))
end
"""


def payload() -> bytes:
    images = np.random.default_rng(0).random((N_IMAGES, SIDE, SIDE), dtype=np.float32)
    out = io.BytesIO()
    np.save(out, images, allow_pickle=False)
    return out.getvalue()


def run_python(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> Result:
    """Closed loop: each thread sends, waits for the whole answer, sends again, until time is up."""
    headers = {"Content-Type": media.NPY, "Accept": media.JSON}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop_at = time.perf_counter() + seconds + 1.0  # reset below, once every thread is ready

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=30)
        start.wait()
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                ok = False
            latencies[i].append(time.perf_counter() - t0)
            errors[i] += not ok
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    t_start = time.perf_counter()
    stop_at = t_start + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t_start
    all_lat = sorted(x for per in latencies for x in per)
    return {
        "requests": len(all_lat),
        "errors": sum(errors),
        "median_ms": statistics.median(all_lat) * 1e3,
        "p99_ms": all_lat[min(len(all_lat) - 1, int(0.99 * len(all_lat)))] * 1e3,
        "rps": len(all_lat) / elapsed,
    }


def run_wrk(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> Result:
    """The same closed loop with wrk: `concurrency` connections over min(concurrency, CPUs) threads."""
    with tempfile.TemporaryDirectory() as tmp:
        script, body_file = Path(tmp) / "post.lua", Path(tmp) / "body.npy"
        script.write_text(WRK_SCRIPT)
        body_file.write_bytes(body)
        threads = min(concurrency, os.cpu_count() or 1)
        command = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(concurrency),
            "-d",
            f"{seconds:g}s",
            "-s",
            str(script),
        ]
        out = subprocess.run(
            [*command, f"http://{LOCALHOST}:{port}{path}"],
            env={**os.environ, ENV_BODY_FILE: str(body_file)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    requests, duration_us, errors, p50_us, p99_us = map(int, out.split("RESULT", 1)[1].split())
    return {
        "requests": requests,
        "errors": errors,
        "median_ms": p50_us / 1e3,
        "p99_ms": p99_us / 1e3,
        "rps": requests / (duration_us / 1e6),
    }


def forward_time_ms(model_dir: Path) -> float:
    """Median time of the model's forward pass (with softmax) on the five images, in this process."""
    from serving.model import load_model, predict_probabilities

    model = load_model(model_dir)
    x = np.random.default_rng(0).random((N_IMAGES, SIDE * SIDE), dtype=np.float32)
    times = []
    for _ in range(FORWARD_REPEATS):
        t0 = time.perf_counter()
        predict_probabilities(model, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(
    load: Load, ports: dict[str, int], body: bytes, rounds: int, seconds: float
) -> list[tuple[str, str, int, Result]]:
    """Interleaved rounds (each arrangement's /invocations, then /bare, at each concurrency), so
    that all see the same background load; medians over rounds of each round's p50 and p99."""
    per_round: dict[tuple[str, str, int], list[Result]] = {}
    for concurrency in CONCURRENCIES:
        for port in ports.values():
            for path in (C.ROUTE_INVOCATIONS, C.ROUTE_BARE):
                load(port, path, body, concurrency, WARMUP_SECONDS)
        for _ in range(rounds):
            for name, port in ports.items():
                for path in (C.ROUTE_INVOCATIONS, C.ROUTE_BARE):
                    per_round.setdefault((name, path, concurrency), []).append(
                        load(port, path, body, concurrency, seconds)
                    )
    rows = []
    for (name, path, concurrency), results in per_round.items():
        total_requests = sum(r["requests"] for r in results)
        rows.append(
            (
                name,
                path,
                concurrency,
                {
                    "median_ms": statistics.median(r["median_ms"] for r in results),
                    "p99_ms": statistics.median(r["p99_ms"] for r in results),
                    "worst_p99_ms": max(r["p99_ms"] for r in results),
                    "rps": total_requests / sum(r["requests"] / r["rps"] for r in results),
                    "rps_min": min(r["rps"] for r in results),
                    "rps_max": max(r["rps"] for r in results),
                    "errors": sum(r["errors"] for r in results),
                },
            )
        )
    names = list(ports)
    return sorted(rows, key=lambda row: (row[1] != C.ROUTE_INVOCATIONS, row[2], names.index(row[0])))


def stress_body() -> bytes:
    x = np.random.default_rng(1).random((STRESS_ROWS, STRESS_FEATURES)).round(4)
    return "\n".join(",".join(map(str, row)) for row in x.tolist()).encode()


def ping_under_stress(ports: dict[str, int], rounds: int) -> dict[str, dict[str, float]]:
    """Each round, each arrangement in turn: slow clients + batch load, then timed pings."""
    body = stress_body()
    pings: dict[str, list[float]] = {name: [] for name in ports}
    batches: dict[str, Counter] = {name: Counter() for name in ports}
    for _ in range(rounds):
        for name, port in ports.items():
            with (
                SlowClients(port, SLOW_HEADERS, SLOW_BODIES),
                BatchLoad(port, body, media.CSV, media.JSON, BATCH_CLIENTS, timeout=10) as load,
            ):
                load.wait_for_answers(1, 10)
                pings[name] += ping_latencies(port, PINGS, PING_TIMEOUT)
            batches[name].update(load.statuses)
    summary = {}
    for name, values in pings.items():
        answered = sorted(v for v in values if v != float("inf"))
        summary[name] = {
            "pings": len(values),
            "median_s": statistics.median(values) if answered else float("inf"),
            "max_s": max(values),
            "over_limit": sum(v > PING_LIMIT for v in values),
            "batches_ok": batches[name][200],
            "batches_failed": sum(batches[name].values()) - batches[name][200],
        }
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per endpoint and round (default 2)")
    parser.add_argument(
        "--stress-rounds", type=int, default=2, help="rounds of part 2 (default 2; 0 skips it)"
    )
    parser.add_argument("--workers", type=int, help="SAGEMAKER_MODEL_SERVER_WORKERS (default: CPUs)")
    parser.add_argument(
        "--client", choices=("auto", "wrk", "python"), default="auto", help="auto: wrk if on PATH"
    )
    args = parser.parse_args(argv)
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    load: Load = run_wrk if client == "wrk" else run_python
    for name in C.SINGLE_THREAD_ENV:  # as `serve` sets them for its workers, so the forward time compares
        os.environ.setdefault(name, "1")

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        model_dir, small_dir = Path(tmp) / "model", Path(tmp) / "model-64"
        write_model(model_dir, SIDE * SIDE, N_CLASSES)
        write_model(small_dir, STRESS_FEATURES, N_CLASSES)
        env = {C.ENV_BARE_ENDPOINT: "1"}
        if args.workers:
            env[C.ENV_WORKERS] = str(args.workers)
        body = payload()
        forward = forward_time_ms(model_dir)
        load_before = os.getloadavg()
        ports, stress_ports = {}, {}
        for i, (name, extra) in enumerate(ARRANGEMENTS.items()):
            server = LocalServer(model_dir, Path(tmp) / f"serve-{i}.log", env={**env, **extra})
            ports[name] = stack.enter_context(server).port
        rows = measure(load, ports, body, args.rounds, args.seconds)
        load_mid = os.getloadavg()
        stress = {}
        if args.stress_rounds:
            for i, (name, extra) in enumerate(ARRANGEMENTS.items()):
                server = LocalServer(small_dir, Path(tmp) / f"stress-{i}.log", env={**env, **extra})
                stress_ports[name] = stack.enter_context(server).port
            stress = ping_under_stress(stress_ports, args.stress_rounds)
        load_after = os.getloadavg()

    def loads(values: tuple[float, float, float]) -> str:
        return "/".join(f"{v:.1f}" for v in values)

    print(f"model: 784 -> {DEFAULT_PARAMS} -> 10; body {len(body)} bytes (.npy, 5x28x28 float32)")
    print(f"CPUs: {os.cpu_count()}, workers: {args.workers or 'CPUs'}, client: {client}")
    print(
        f"{args.rounds} rounds x {args.seconds:g} s per row; load average (1/5/15 min) {loads(load_before)} "
        f"before, {loads(load_mid)} after part 1, {loads(load_after)} after part 2"
    )
    print(f"bare forward pass + softmax (5 images, in process): median {forward:.3f} ms\n")
    print(
        "| arrangement | endpoint | concurrency | median ms | p99 ms (worst round) "
        "| requests/s (rounds: min-max) | errors |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, path, concurrency, r in rows:
        rps = f"{r['rps']:.0f} ({r['rps_min']:.0f}-{r['rps_max']:.0f})"
        cells = (
            f"{r['median_ms']:.2f} | {r['p99_ms']:.2f} ({r['worst_p99_ms']:.2f}) | {rps} | {r['errors']:.0f}"
        )
        print(f"| {name} | POST {path} | {concurrency} | {cells} |")
    print()
    for name in ARRANGEMENTS:
        inv = {c: r for n, p, c, r in rows if n == name and p == C.ROUTE_INVOCATIONS}
        bare = {c: r for n, p, c, r in rows if n == name and p == C.ROUTE_BARE}
        shares = ", ".join(f"{inv[c]['rps'] / bare[c]['rps']:.0%} at concurrency {c}" for c in CONCURRENCIES)
        print(f"{name}: /invocations does {shares} of its bare endpoint's requests/s")
    if stress:
        print(
            f"\n/ping under stress ({SLOW_HEADERS} slow-header + {SLOW_BODIES} slow-body connections, "
            f"{BATCH_CLIENTS} clients posting {STRESS_ROWS}x{STRESS_FEATURES} CSV batches; "
            f"{args.stress_rounds} rounds x {PINGS} pings, each given {PING_TIMEOUT:g} s)\n"
        )
        print(
            "| arrangement | median ping s | max ping s | pings over 2 s | batches answered 200 | batches failed |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for name, r in stress.items():
            print(
                f"| {name} | {r['median_s']:.3f} | {r['max_s']:.3f} | {r['over_limit']}/{r['pings']} "
                f"| {r['batches_ok']} | {r['batches_failed']} |"
            )


if __name__ == "__main__":
    main()
