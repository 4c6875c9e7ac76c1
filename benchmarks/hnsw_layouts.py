"""Index layouts at 1M for single-query search with an exact re-rank: which one could answer in ≤ 0.5 ms.

Why: ``auto`` answers one query on 1M × 384 vectors in ~0.63 ms at recall@10 0.955 (HNSW32 over fp16 codes +
exact re-rank, docs/benchmarks.md). This walks the other layouts faiss offers — graph degree (M), build effort
(efConstruction), code size (fp16 / SQ8), insertion order (clustered, for memory locality), faiss's hash-set
visited table, IVF with 4-bit fast-scan PQ — each searched one query per call on one thread and re-ranked from
the float vectors exactly as ``Collection.search`` does, on the synthetic vectors of ``search.py``. Every
layout's p50 is printed with its ratio to the first one in the same run. Built indexes are kept in ``--cache``
(a 1M graph takes 7–16 minutes here), so a second run only searches.

    python benchmarks/hnsw_layouts.py --layouts "HNSW32,SQfp16@80;HNSW32,SQfp16@80+sorted;HNSW24,SQfp16@160"
    python benchmarks/hnsw_layouts.py --layouts "HNSW32,SQfp16@80;IVF1024,PQ96x4fs" --nprobe-values 32,64
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import faiss
import numpy as np
from _common import cpu_report, cpu_snapshot, machine_line
from search import int_list, recall_at_k, synthetic, training_sample


def build(spec: str, base: np.ndarray, cache: Path) -> tuple[faiss.Index, np.ndarray, float]:
    """The layout ``FACTORY[@efConstruction][+sorted]`` over ``base`` (from the cache when built before), the
    insertion order (index row → base row) and the build seconds (nan when cached)."""
    factory, _, rest = spec.partition("@")
    clustered = rest.endswith("+sorted")
    ef_construction = int(rest.removesuffix("+sorted") or 0)
    path = cache / f"{spec.replace(',', '_').replace('@', '_').replace('+', '_')}-{len(base)}.faissindex"
    order_path = path.with_suffix(".order.npy")  # kept with the index: a cached graph is only valid with its order
    if path.exists() and (order_path.exists() or not clustered):
        return faiss.read_index(str(path)), np.load(order_path) if clustered else np.arange(len(base)), float("nan")
    order = np.arange(len(base))
    if clustered:  # rows of one k-means cluster next to each other in memory
        kmeans = faiss.Kmeans(base.shape[1], 1024, niter=10, seed=1, spherical=True)
        kmeans.train(base[np.random.default_rng(0).choice(len(base), min(len(base), 100_000), replace=False)])
        order = np.argsort(kmeans.index.search(base, 1)[1][:, 0], kind="stable")
    index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if ef_construction:
        faiss.downcast_index(index).hnsw.efConstruction = ef_construction
    started = time.perf_counter()
    index.train(training_sample(base))  # the sample embtune's own builds train on
    index.add(base[order])
    seconds = time.perf_counter() - started
    if clustered:
        np.save(order_path, order)
    faiss.write_index(index, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)
    return index, order, seconds


def search_p50(index: faiss.Index, order: np.ndarray, base: np.ndarray, queries: np.ndarray, params: object,
               fetch: int) -> tuple[float, np.ndarray]:
    """One query per call, the ``fetch`` candidates re-ranked by exact inner product; p50 ms and the top 10s."""
    times, found = [], np.full((len(queries), 10), -1, dtype=np.int64)
    for row, query in enumerate(queries):
        started = time.perf_counter()
        _, ids = index.search(query[None], fetch, params=params)
        candidates = order[ids[0][ids[0] >= 0]]
        top = candidates[np.argsort(-(base[candidates] @ query))[:10]]
        times.append(time.perf_counter() - started)
        found[row, :len(top)] = top
    return float(np.median(times) * 1e3), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default="HNSW32,SQfp16@80;HNSW32,SQfp16@80+sorted;HNSW24,SQfp16@160;"
                        "HNSW32,SQ8@80", help="';'-separated FACTORY[@efConstruction][+sorted]; the first is the "
                        "reference of the ratios")
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--ef-values", default="40,48,56,64")
    parser.add_argument("--nprobe-values", default="16,32,64")
    parser.add_argument("--refine-values", default="2,4", help="candidates fetched per result (k × this)")
    parser.add_argument("--visited-thresholds", default="10000000",
                        help="faiss visited_table_hashset_threshold values (below n: a hash set per query)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/embtune-layouts"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    options = {"clusters": 1000, "intrinsic": 24, "seed": 0}
    base = synthetic(args.size, 384, stream=1, **options)
    queries = synthetic(args.queries, 384, stream=2, **options)
    truth = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)[1]
    threads = faiss.omp_get_max_threads()
    before = cpu_snapshot()
    reference: dict[tuple[str, int], float] = {}
    print("| layout | build s | setting | refine | single p50 ms | recall@10 | p50 / first layout |\n"
          "|---|---:|---|---:|---:|---:|---:|")
    for number, spec in enumerate(args.layouts.split(";")):
        index, order, seconds = build(spec, base, args.cache)
        faiss.omp_set_num_threads(1)
        if "IVF" in spec:
            settings = [(f"nprobe {p}", faiss.SearchParametersIVF(nprobe=p))
                        for p in int_list(args.nprobe_values)]
        else:
            settings = [(f"efSearch {e}" + (f", visited hash set below {t}" if t != 10_000_000 else ""),
                         (faiss.SearchParametersHNSW(efSearch=e), t))
                        for t in int_list(args.visited_thresholds) for e in int_list(args.ef_values)]
        for label, params in settings:
            if isinstance(params, tuple):
                params, threshold = params
                faiss.cvar.visited_table_hashset_threshold = threshold
            for refine in int_list(args.refine_values):
                p50, found = search_p50(index, order, base, queries, params, 10 * refine)
                recall = recall_at_k(found, truth)
                key = (label, refine)
                if number == 0:
                    reference[key] = p50
                ratio = f"{p50 / reference[key]:.2f}" if key in reference else "–"
                print(f"| {spec} | {seconds:.0f} | {label} | {refine} | {p50:.3f} | {recall:.4f} | {ratio} |",
                      flush=True)
        faiss.cvar.visited_table_hashset_threshold = 10_000_000
        faiss.omp_set_num_threads(threads)
        del index
    print(f"\n# {cpu_report(before)}")


if __name__ == "__main__":
    main()
