"""What serving product search through the Gradio demo costs, against calling core directly.

The demo doubles as a search service (``gradio_client``, ``/compare``). This measures, in one
run on 127.0.0.1, queries/s and p50/p99 latency of that API at 1, 8 and 32 concurrent clients,
and of the very same core call (``SideBySideSearch.compare``: model A and model B over the
collection) from as many threads, so the ratio is the demo's overhead (HTTP, queue, JSON),
not the model's cost. The demo's queue runs at most ``--concurrency-limit`` requests at once,
as it does for users; the direct calls have no such limit.

Data: the bundled catalogue indexed with the bundled model (MiniLM) in a temporary workspace;
model B is the same bundled model unless ``--model-b`` says otherwise (both sides are searched
either way, which is what a demo query costs). Queries: the bundled labelled catalogue queries,
cycled. Each repeat of a query hits the embedding cache after its first time in both paths, so
the model's encoding time mostly drops out: the overhead ratio is the upper bound a user sees.

Run from the repository root::

    nice -n 19 .venv/bin/python benchmarks/demos.py --queries 64
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from _common import cpu_report, cpu_snapshot, machine_line


def run_at(call: Callable[[str], object], queries: list[str], concurrency: int) -> tuple[float, np.ndarray]:
    """(queries/s, per-query latencies in ms) of ``call`` over ``queries`` from ``concurrency`` threads."""
    def one(query: str) -> float:
        started = time.perf_counter()
        call(query)
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = np.array(list(pool.map(one, queries)))
    return len(queries) / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=64, help="queries per concurrency level and path")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--concurrency-limit", type=int, default=None, help="the demo queue's limit "
                        "(default: demos.product_search.DEFAULT_CONCURRENCY)")
    parser.add_argument("--model-b", default="default")
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()

    from gradio_client import Client

    from core.collection.named import index_bundled_catalogue
    from core.evaluation import load_retrieval_set
    from demos.product_search import DEFAULT_CONCURRENCY, build_demo
    from demos.product_service import SideBySideSearch
    from storage.db import Database
    from storage.workspace import Workspace

    limit = args.concurrency_limit or DEFAULT_CONCURRENCY
    levels = [int(c) for c in args.concurrency.split(",")]
    texts = list(load_retrieval_set("bundled:catalogue").queries.values())
    queries = [texts[i % len(texts)] for i in range(args.queries)]
    with tempfile.TemporaryDirectory(prefix="embtune-bench-demos-") as tmp:
        workspace = Workspace.open(Path(tmp) / "ws")
        db = Database(workspace.db_url())
        started = time.perf_counter()
        index_bundled_catalogue(workspace, db, device="cpu")
        print(f"indexed the bundled catalogue in {time.perf_counter() - started:.1f} s", flush=True)
        direct = SideBySideSearch(workspace, db, device="cpu")
        direct.compare(queries[0], "catalogue", model_b=args.model_b, k=args.k)  # load + prepare both sides
        demo = build_demo(workspace=workspace, db=db, model_b=args.model_b, device="cpu", concurrency_limit=limit)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        try:
            def via_core(query: str) -> object:
                return direct.compare(query, "catalogue", model_b=args.model_b, k=args.k)

            def via_demo(query: str) -> object:
                return client.predict(query, "catalogue", "", args.model_b, args.k, api_name="/compare")

            for warm in queries[:8]:  # first HTTP connection, first cache fill in both paths
                via_core(warm), via_demo(warm)
            snapshot = cpu_snapshot()
            rows = []
            for concurrency in levels:
                core_qps, core_ms = run_at(via_core, queries, concurrency)
                demo_qps, demo_ms = run_at(via_demo, queries, concurrency)
                rows.append((concurrency, demo_qps, np.percentile(demo_ms, 50), np.percentile(demo_ms, 99),
                             core_qps, np.percentile(core_ms, 50), np.percentile(core_ms, 99), core_qps / demo_qps))
                print(f"concurrency {concurrency}: demo {demo_qps:.1f} q/s, core {core_qps:.1f} q/s", flush=True)
        finally:
            client.close()
            demo.close()

    print()
    print(f"machine: {machine_line()}")
    print(f"{args.queries} queries per row, k={args.k}, both sides (A = bundled model, B = {args.model_b}), "
          f"demo queue limit {limit}")
    print("| clients | demo q/s | demo p50 ms | demo p99 ms | core q/s | core p50 ms | core p99 ms "
          "| overhead (core/demo q/s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, dq, d50, d99, cq, c50, c99, ratio in rows:
        print(f"| {c} | {dq:.1f} | {d50:.1f} | {d99:.1f} | {cq:.1f} | {c50:.1f} | {c99:.1f} | {ratio:.2f}× |")
    print(cpu_report(snapshot))


if __name__ == "__main__":
    main()
