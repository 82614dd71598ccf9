"""Search service latency and throughput: ``uniret serve`` in its own process on loopback, C concurrent clients
(each sends its next request when the last is answered) for C in 1, 10, 100, with micro-batching on and off.

Each client posts ``{"query": q, "k": 10}`` with SciFact queries in turn; latency is measured per request at the
client (p50, p99), throughput is answered requests per second of wall time. The service's ``/stats`` gives the
mean number of queries per backend call (1 when micro-batching is off).

    uniret index --data scifact --retriever dense --output idx/scifact-dense
    python benchmarks/serve_latency.py --index idx/scifact-dense
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

from _common import BenchmarkRun
from uniret.data import load_beir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(index: str, port: int, micro: bool, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uniret", "-q", "serve", "--index", index, "--port", str(port), "--device", "cpu",
           *([] if micro else ["--no-micro-batching"]), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the service did not start in 300 s")


async def load(url: str, queries: list[str], clients: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=1800) as client:
        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t = time.perf_counter()
                try:
                    r = await client.post("/search", json={"query": queries[i % len(queries)], "k": 10})
                    ok = r.status_code == 200
                except httpx.HTTPError:  # counted, never dropped
                    ok = False
                latencies.append(time.perf_counter() - t)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    lat = sorted(latencies)
    return {"clients": clients, "requests": len(lat), "errors": errors, "wall_seconds": wall,
            "throughput_rps": len(lat) / wall, "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "mean_ms": 1000 * statistics.fmean(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="a saved index to serve")
    ap.add_argument("--data", default="scifact", help="whose test queries are sent")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--requests", type=int, default=400, help="requests per (mode, clients) cell")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    args = ap.parse_args()
    bench = BenchmarkRun("serve_latency")

    queries = list(load_beir(args.data).split_queries("test").values())
    cells: dict[str, list[dict[str, float]]] = {}
    batches: dict[str, dict[str, float]] = {}
    for micro in (True, False):
        mode = "micro_batching" if micro else "one_request_per_call"
        port = free_port()
        proc = start_service(args.index, port, micro, ["--max-wait-ms", str(args.max_wait_ms)])
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(load(url, queries, 4, args.warmup))
            cells[mode] = []
            for c in args.clients:
                before = httpx.get(url + "/stats").json()["batchers"]
                cell = asyncio.run(load(url, queries, c, args.requests))
                after = httpx.get(url + "/stats").json()["batchers"]
                name = next(iter(after))
                calls = after[name]["batches"] - before[name]["batches"]
                cell["queries_per_call"] = (after[name]["queries"] - before[name]["queries"]) / max(calls, 1)
                cells[mode].append(cell)
                print(f"{mode:22s} clients {c:4d}: p50 {cell['p50_ms']:7.1f} ms  p99 {cell['p99_ms']:7.1f} ms  "
                      f"{cell['throughput_rps']:7.1f} req/s  {cell['queries_per_call']:.1f} queries/call  "
                      f"errors {cell['errors']}", flush=True)
            batches[mode] = httpx.get(url + "/stats").json()["batchers"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    from uniret.index import read_manifest

    m = read_manifest(args.index)
    path = bench.save({"index": {"path": args.index, "kind": m["kind"], "num_docs": m["num_docs"],
                                 "encoder": (m.get("encoder") or {}).get("name")},
                       "k": 10, "requests_per_cell": args.requests, "max_wait_ms": args.max_wait_ms,
                       "service_device": "cpu", "client": "httpx.AsyncClient in another process, loopback",
                       "cells": cells, "stats": batches})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
