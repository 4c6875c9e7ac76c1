"""What serving product search through the Gradio demo costs, against calling core directly.

The demo doubles as a search service (``/compare``: a plain HTTP POST to ``/gradio_api/run/compare``, or
``gradio_client``). This drives it with N concurrent
clients (default 20) for a fixed time (default 30 s) and prints throughput and p50/p95/p99 latency, then
does the same with the very same core call (``SideBySideSearch.compare``: model A and model B over the
collection) from as many threads, so the ratio is the demo's overhead (HTTP, queue, JSON), not the
models' cost. The demo holds both models warm and batches concurrent queries per model
(``core.embedders.batching.QueryBatcher``); ``--no-batching`` serves each query with its own model call,
as the first release did, for the before/after. ``--sharing`` asks whether the two models' forward passes
contend for the cores: ``lock`` lets one model run at a time, ``one-thread`` gives each torch one thread.

Data: the bundled catalogue indexed with the default model in a temporary workspace; model B is
``--model-b`` (default ``minilm``: a second, different model, so B's side is really encoded — give a
fine-tuned run's folder to measure two e5-sized models). Queries: the bundled labelled catalogue
queries, each sent with a running number appended, so no query is answered from the embedding cache.

The clients are plain HTTP POSTs (httpx) by default — what a service integration sends; ``--gradio-client``
uses ``gradio_client.Client.predict`` instead, whose own client-side work (job submission, event stream) runs
in this process too and roughly doubles the time at one client. Clients and server share this process and its
two cores, so the figures are pessimistic for clients on other machines.

Run from the repository root::

    .venv/bin/python benchmarks/demos.py                        # 20 clients, 30 s
    .venv/bin/python benchmarks/demos.py --clients 1,20 --seconds 20 --model-b /path/to/run
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from _common import cpu_report, cpu_snapshot, machine_line


def run_for(call: Callable[[str], object], texts: list[str], clients: int, seconds: float, tag: str
            ) -> tuple[float, np.ndarray]:
    """(queries/s, per-query latencies in ms) of ``clients`` threads calling ``call`` back to back for
    ``seconds``; every call a query text never sent before."""
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    def client(_: int) -> list[float]:
        latencies = []
        while time.perf_counter() < deadline:
            number = next(counter)
            started = time.perf_counter()
            call(f"{texts[number % len(texts)]} {tag}{number}")
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = np.array([value for part in pool.map(client, range(clients)) for value in part])
    return len(latencies) / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="20", help="concurrent clients, comma separated levels")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each level runs, per path")
    parser.add_argument("--concurrency-limit", type=int, default=None, help="the demo queue's limit "
                        "(default: demos.product_search.DEFAULT_CONCURRENCY)")
    parser.add_argument("--model-b", default="minilm")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--no-batching", action="store_true", help="one model call per query (the old demo)")
    parser.add_argument("--gradio-client", action="store_true", help="clients use gradio_client, not plain HTTP")
    parser.add_argument("--sharing", choices=("as-served", "lock", "one-thread"), default="as-served",
                        help="how the two models share the cores: as served, one at a time, one torch thread each")
    args = parser.parse_args()

    from gradio_client import Client

    import demos.product_service as service
    from core.collection.named import index_bundled_catalogue
    from core.evaluation import load_retrieval_set
    from demos.product_search import DEFAULT_CONCURRENCY, build_demo
    from demos.product_service import SideBySideSearch
    from storage.db import Database
    from storage.workspace import Workspace

    if args.no_batching:
        class Unbatched(service.QueryBatcher):
            def submit(self, text: str) -> Future:
                answer: Future = Future()
                answer.set_result(self.embedder.encode_query(text))
                return answer

        service.QueryBatcher = Unbatched
    if args.sharing == "one-thread":
        import torch

        torch.set_num_threads(1)
    if args.sharing == "lock":
        one_at_a_time = threading.Lock()

        class Locked:  # the embedder, its batched forward pass behind the lock both batchers share
            def __init__(self, embedder: object) -> None:
                self.embedder = embedder

            def encode_query(self, texts: list[str]) -> np.ndarray:
                with one_at_a_time:
                    return self.embedder.encode_query(texts)

            def __getattr__(self, name: str) -> object:
                return getattr(self.embedder, name)

        class OneModelAtATime(service.QueryBatcher):
            def __init__(self, embedder: object, **kwargs: object) -> None:
                super().__init__(Locked(embedder), **kwargs)

        service.QueryBatcher = OneModelAtATime
    limit = args.concurrency_limit or DEFAULT_CONCURRENCY
    levels = [int(c) for c in args.clients.split(",")]
    texts = list(load_retrieval_set("bundled:catalogue").queries.values())
    with tempfile.TemporaryDirectory(prefix="embtune-bench-demos-") as tmp:
        workspace = Workspace.open(Path(tmp) / "ws")
        db = Database(workspace.db_url())
        started = time.perf_counter()
        index_bundled_catalogue(workspace, db, device="cpu")
        print(f"indexed the bundled catalogue in {time.perf_counter() - started:.1f} s", flush=True)
        direct = SideBySideSearch(workspace, db, device="cpu")
        direct.compare(texts[0], "catalogue", model_b=args.model_b, k=args.k)  # load + prepare both sides
        demo = build_demo(workspace=workspace, db=db, model_b=args.model_b, device="cpu", concurrency_limit=limit)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        http = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=64))
        try:
            def via_core(query: str) -> object:
                return direct.compare(query, "catalogue", model_b=args.model_b, k=args.k)

            def via_demo(query: str) -> object:
                if args.gradio_client:
                    return client.predict(query, "catalogue", "", args.model_b, args.k, api_name="/compare")
                answer = http.post(f"http://127.0.0.1:{port}/gradio_api/run/compare",
                                   json={"data": [query, "catalogue", "", args.model_b, args.k]})
                answer.raise_for_status()
                return answer.json()["data"][0]

            for number, warm in enumerate(texts[:8]):  # first HTTP connection, first batches
                via_core(f"{warm} warm{number}"), via_demo(f"{warm} warm-demo{number}")
            snapshot = cpu_snapshot()
            rows = []
            for clients in levels:
                demo_qps, demo_ms = run_for(via_demo, texts, clients, args.seconds, f"d{clients}-")
                core_qps, core_ms = run_for(via_core, texts, clients, args.seconds, f"c{clients}-")
                rows.append((clients, demo_qps, *np.percentile(demo_ms, [50, 95, 99]), core_qps,
                             *np.percentile(core_ms, [50, 95, 99]), len(demo_ms)))
                print(f"{clients} clients: demo {demo_qps:.1f} q/s, core {core_qps:.1f} q/s", flush=True)
        finally:
            http.close()
            client.close()
            demo.close()

    print()
    print(f"machine: {machine_line()}")
    print(f"{args.seconds:g} s per row and path, k={args.k}, both sides (A = default, B = {args.model_b}), "
          f"demo queue limit {limit}, {'one model call per query' if args.no_batching else 'batched per model'}, "
          f"clients {'gradio_client' if args.gradio_client else 'plain HTTP POST'}, models sharing the cores "
          f"{args.sharing}; "
          f"every query a new text (no cache hits)")
    print("| clients | demo q/s | demo p50 ms | demo p95 ms | demo p99 ms | core q/s | core p50 ms | core p95 ms "
          "| core p99 ms | demo p95 / core p95 | queries |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, dq, d50, d95, d99, cq, c50, c95, c99, count in rows:
        print(f"| {c} | {dq:.1f} | {d50:.0f} | {d95:.0f} | {d99:.0f} | {cq:.1f} | {c50:.0f} | {c95:.0f} | {c99:.0f} "
              f"| {d95 / c95:.2f}× | {count} |")
    print(cpu_report(snapshot))


if __name__ == "__main__":
    main()
