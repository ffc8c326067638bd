"""Benchmark `serve`: /invocations with five 28x28 images as .npy, against a bare endpoint.

    .venv/bin/python benchmarks/serving_bench.py [--rounds 5] [--seconds 2] [--client auto|wrk|python]

Starts the real `serve` (gunicorn, default settings: one worker per CPU) on 127.0.0.1 with a
784-wide model written in the training format (random weights), with the bare POST /bare
switched on (reads the body like /invocations, answers an empty 200: the server's own cost),
and drives both at concurrency 1 and 8 with a closed loop (each connection sends its next
request when the previous answer is in), in interleaved rounds so that both see the same
background load:
  - wrk (`apt-get install -y wrk`), used when on PATH: a C client, so the CPUs go to the
    server; its latency starts when the request is written (connecting is not counted);
  - else a Python client: threads over http.client, latency including the connect. Its own CPU
    use (~0.2 ms a request, under one GIL) competes with the server and inflates the tail.
Prints a Markdown table and the model's bare forward time measured in this process.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving import constants as C
from serving import content_types
from serving.localmodel import DEFAULT_PARAMS, write_model
from serving.localserver import LOCALHOST, LocalServer

N_IMAGES, SIDE, N_CLASSES = 5, 28, 10
CONCURRENCIES = (1, 8)
WARMUP_SECONDS = 1.0
FORWARD_REPEATS = 2000
ENV_BODY_FILE = "BENCH_BODY"  # tells the wrk script where the body is

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
    headers = {"Content-Type": content_types.NPY, "Accept": content_types.JSON}
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


def measure(load: Load, port: int, body: bytes, rounds: int, seconds: float) -> list[tuple[str, int, Result]]:
    """Interleaved rounds (/invocations, then /bare, at each concurrency), so that both endpoints
    see the same background load; medians over rounds of each round's p50 and p99."""
    per_round: dict[tuple[str, int], list[Result]] = {}
    for concurrency in CONCURRENCIES:
        for path in (C.ROUTE_INVOCATIONS, C.ROUTE_BARE):
            load(port, path, body, concurrency, WARMUP_SECONDS)
        for _ in range(rounds):
            for path in (C.ROUTE_INVOCATIONS, C.ROUTE_BARE):
                per_round.setdefault((path, concurrency), []).append(
                    load(port, path, body, concurrency, seconds)
                )
    rows = []
    for (path, concurrency), results in per_round.items():
        total_requests = sum(r["requests"] for r in results)
        rows.append(
            (
                path,
                concurrency,
                {
                    "median_ms": statistics.median(r["median_ms"] for r in results),
                    "p99_ms": statistics.median(r["p99_ms"] for r in results),
                    "worst_p99_ms": max(r["p99_ms"] for r in results),
                    "rps": total_requests / sum(r["requests"] / r["rps"] for r in results),
                    "errors": sum(r["errors"] for r in results),
                },
            )
        )
    return sorted(rows, key=lambda row: (row[0] != C.ROUTE_INVOCATIONS, row[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per endpoint and round (default 2)")
    parser.add_argument("--workers", type=int, help="SAGEMAKER_MODEL_SERVER_WORKERS (default: CPUs)")
    parser.add_argument(
        "--client", choices=("auto", "wrk", "python"), default="auto", help="auto: wrk if on PATH"
    )
    args = parser.parse_args(argv)
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    load: Load = run_wrk if client == "wrk" else run_python
    for name in C.SINGLE_THREAD_ENV:  # as `serve` sets them for its workers, so the forward time compares
        os.environ.setdefault(name, "1")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        write_model(model_dir, SIDE * SIDE, N_CLASSES)
        env = {C.ENV_BARE_ENDPOINT: "1"}
        if args.workers:
            env[C.ENV_WORKERS] = str(args.workers)
        body = payload()
        forward = forward_time_ms(model_dir)
        load_before = os.getloadavg()[0]
        with LocalServer(model_dir, Path(tmp) / "serve.log", env=env) as server:
            rows = measure(load, server.port, body, args.rounds, args.seconds)
        load_after = os.getloadavg()[0]

    print(f"model: 784 -> {DEFAULT_PARAMS} -> 10; body {len(body)} bytes (.npy, 5x28x28 float32)")
    print(f"CPUs: {os.cpu_count()}, workers: {args.workers or 'CPUs'}, client: {client}")
    print(
        f"{args.rounds} rounds x {args.seconds:g} s per row; load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print(f"bare forward pass + softmax (5 images, in process): median {forward:.3f} ms\n")
    print("| endpoint | concurrency | median ms | p99 ms (worst round) | requests/s | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path, concurrency, r in rows:
        cells = f"{r['median_ms']:.2f} | {r['p99_ms']:.2f} ({r['worst_p99_ms']:.2f}) | {r['rps']:.0f} | {r['errors']:.0f}"
        print(f"| POST {path} | {concurrency} | {cells} |")
    inv = {c: r for p, c, r in rows if p == C.ROUTE_INVOCATIONS}
    bare = {c: r for p, c, r in rows if p == C.ROUTE_BARE}
    print()
    for c in CONCURRENCIES:
        print(
            f"concurrency {c}: /invocations does {inv[c]['rps'] / bare[c]['rps']:.0%} of the bare endpoint's requests/s"
        )


if __name__ == "__main__":
    main()
