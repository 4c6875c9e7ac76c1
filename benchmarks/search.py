"""Search benchmark: embtune's ``Collection`` against the same FAISS indexes built directly.

Why: a collection wraps FAISS with an id map, its own copy of the vectors, normalisation and
Python hit objects, and ``auto`` chooses the index kind. This measures, in one run and on the
same vectors and queries, what each kind costs to build, how fast it answers (a batch of
queries for throughput, one query at a time for latency), how close it comes to exact
search (recall@10 against brute force), and what the wrapper costs against faiss doing the
same work with the same parameters. ``--sweep`` tries other efSearch / nprobe values on the
plain faiss indexes to show which settings would meet a recall/latency target.

Two kinds of data:

* synthetic clustered vectors (Gaussian clusters in a low-dimensional subspace, normalised):
  cheap to make at any size, but easier for HNSW than real embeddings (optimistic HNSW
  recall) and, as the clusters overlap, harder for IVF;
* real embeddings (``--real N``) of the bundled catalogue and, when present, the MedQuAD
  files in ``../shared/data/medquad`` (read in place, never copied), with held-out texts as
  queries.

Run from the repository root::

    .venv/bin/python benchmarks/search.py                                   # 10k and 100k synthetic
    .venv/bin/python benchmarks/search.py --sizes 10000,100000 --real 20000
    .venv/bin/python benchmarks/search.py --sizes 1000000 --kinds hnsw,auto --sweep
    .venv/bin/python benchmarks/search.py --sizes 200000,1000000 --kinds auto --baseline 64 --rounds 1

``--baseline EF`` adds, per dataset, embtune's ``auto`` against plain faiss ``HNSW32`` (float vectors in the
graph, efSearch EF) built on the same vectors: single-query p50, recall, build time and bytes per item, as
a ratio, and — with two or more sizes — a 10M projection from the measured per-item costs.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local data only: never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_report, cpu_snapshot, machine_line, timed

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "core" / "data" / "catalogue" / "products.csv"
MEDQUAD = REPO.parent / "shared" / "data" / "medquad"
TARGET_RECALL = 0.95
TARGET_MS = 1.0


# -- data -------------------------------------------------------------------------------------


def normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def synthetic(count: int, dimension: int, *, clusters: int, intrinsic: int, seed: int, stream: int) -> np.ndarray:
    """``count`` clustered unit vectors: centre + spread in a shared low-dimensional subspace + a little noise.

    Centres and subspace depend only on ``seed``; ``stream`` picks the points, so base and
    queries (different streams) come from one distribution without sharing a single point.
    Real sentence embeddings also have a low intrinsic dimension; isotropic 384-d noise
    would make every neighbour equally far and no index could find the top 10.
    """
    rng = np.random.default_rng(seed)
    centres = normalised(rng.standard_normal((clusters, dimension)))
    basis = rng.standard_normal((intrinsic, dimension)).astype(np.float32) / np.sqrt(dimension)
    points = np.empty((count, dimension), dtype=np.float32)
    draw = np.random.default_rng([seed, stream])
    for start in range(0, count, 100_000):
        stop = min(count, start + 100_000)
        rows = stop - start
        chunk = centres[draw.integers(0, clusters, rows)]
        chunk += 0.8 * (draw.standard_normal((rows, intrinsic), dtype=np.float32) @ basis)
        chunk += draw.standard_normal((rows, dimension), dtype=np.float32) * (0.1 / np.sqrt(dimension))
        points[start:stop] = normalised(chunk)
    return points


def real_texts(limit: int, seed: int) -> tuple[list[str], str]:
    """Up to ``limit`` distinct real texts, shuffled, and a line saying where they came from.

    In this order: catalogue names and descriptions, MedQuAD questions, single sentences of
    the MedQuAD answers, whole answers (train positives and dev corpus). Short texts come
    first because a whole answer (~800 characters, ~200 tokens) embeds ~10x slower on a CPU.
    """
    sources: list[tuple[str, list[str]]] = []
    with open(CATALOGUE, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    sources.append(("catalogue", [row["name"] for row in rows] + [row["description"] for row in rows]))
    long_texts: list[str] = []
    if (MEDQUAD / "train_pairs.csv").exists():
        with open(MEDQUAD / "train_pairs.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        sources.append(("medquad questions", [row["anchor"] for row in rows]))
        long_texts += [row["positive"] for row in rows]
    if (MEDQUAD / "dev_corpus.csv").exists():
        with open(MEDQUAD / "dev_corpus.csv", encoding="utf-8", newline="") as handle:
            long_texts += [row["text"] for row in csv.DictReader(handle)]
    if long_texts:
        sentences = [part for text in long_texts for part in re.split(r"(?<=[.!?])\s+", text) if len(part) >= 30]
        sources.append(("medquad answer sentences", sentences))
        sources.append(("medquad answers", long_texts))
    chosen: dict[str, None] = {}
    used: list[str] = []
    for name, texts in sources:
        before = len(chosen)
        for text in texts:
            if len(chosen) >= limit:
                break
            if text and text.strip():
                chosen.setdefault(text.strip())
        if len(chosen) > before:
            used.append(f"{name} {len(chosen) - before}")
    texts = list(chosen)
    np.random.default_rng(seed).shuffle(texts)
    return texts, ", ".join(used)


def real_embeddings(limit: int, seed: int, cache_file: Path | None) -> tuple[np.ndarray, str]:
    """Embed ``real_texts`` with the bundled model (or load them from ``cache_file``)."""
    texts, origin = real_texts(limit, seed)
    key = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    if cache_file is not None and cache_file.exists():
        stored = np.load(cache_file, allow_pickle=False)
        if str(stored["key"]) == key:
            return stored["vectors"], f"{len(texts)} texts ({origin}); embeddings loaded from {cache_file}"
    from core.embedders import load_embedder

    embedder = load_embedder("default", device="cpu", cache=False)
    start = time.perf_counter()
    vectors = embedder.encode(texts, batch_size=64)
    seconds = time.perf_counter() - start
    if cache_file is not None:
        np.savez(cache_file, vectors=vectors, key=np.array(key))
    return vectors, (f"{len(texts)} texts ({origin}); embedded with {embedder.model_id} in {seconds:.0f} s "
                     f"({len(texts) / seconds:.0f} texts/s)")


# -- measuring --------------------------------------------------------------------------------


@dataclass
class Side:
    """One contender's numbers for one index kind."""

    build_s: float = float("nan")
    batch_s: list[float] = field(default_factory=list)
    single_ms: list[float] = field(default_factory=list)
    recall: float = float("nan")

    def qps(self, queries: int) -> float:
        return queries / statistics.median(self.batch_s)

    def pct(self, q: float) -> float:
        return float(np.percentile(self.single_ms, q))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k found (positions; -1 never matches)."""
    k = truth.shape[1]
    return float(np.mean([len(set(row[row >= 0].tolist()) & set(exact.tolist())) / k
                          for row, exact in zip(found, truth, strict=True)]))


def hits_to_positions(hits: list[list], k: int) -> np.ndarray:
    """embtune hits → (n, k) row positions (ids are the positions as strings)."""
    out = np.full((len(hits), k), -1, dtype=np.int64)
    for row, row_hits in enumerate(hits):
        for column, hit in enumerate(row_hits[:k]):
            out[row, column] = int(hit.id)
    return out


def interleaved_batches(actions: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each action ``rounds`` times, alternating who goes first."""
    names = list(actions)
    out: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        order = names if round_number % 2 == 0 else names[::-1]
        for name in order:
            out[name].append(timed(actions[name]))
    return out


def interleaved_singles(actions: dict[str, Callable[[int], object]], count: int, budget_s: float,
                        block: int = 50) -> dict[str, list[float]]:
    """Per-query latency in ms, one query per call, for queries 0.. until ``count`` or the budget.

    Blocks of ``block`` queries: each contender runs the whole block, then the next (the first one rotating), so
    load drifts hit all alike and no contender finds the graph nodes of a query just searched by another
    still in cache (query by query, the second and third search of the same query ran warm: ~2× faster)."""
    names = list(actions)
    out: dict[str, list[float]] = {name: [] for name in names}
    deadline = time.perf_counter() + budget_s
    for number, start_at in enumerate(range(0, count, block)):
        positions = range(start_at, min(count, start_at + block))
        for name in names[number % len(names):] + names[:number % len(names)]:
            for position in positions:
                start = time.perf_counter_ns()
                actions[name](position)
                out[name].append((time.perf_counter_ns() - start) / 1e6)
        if time.perf_counter() > deadline and start_at + block >= 20:
            break
    return out


def training_sample(vectors: np.ndarray) -> np.ndarray:
    """The sample embtune trains IVF centroids on (same rule as ``Collection._training_sample``)."""
    limit = max(100_000, 256 * 1024)
    if len(vectors) <= limit:
        return vectors
    rows = np.random.default_rng(0).choice(len(vectors), size=limit, replace=False)
    return vectors[np.sort(rows)]


def build_plain(factory: str, base: np.ndarray) -> tuple[faiss.Index, float]:
    """The same index built straight through faiss (no id map), and its build seconds."""
    from core.collection.policy import HNSW_EF_CONSTRUCTION

    start = time.perf_counter()
    index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if not index.is_trained:
        index.train(training_sample(base))
    index.add(base)
    return index, time.perf_counter() - start


def set_plain_params(index: faiss.Index, params: dict[str, int]) -> None:
    if "efSearch" in params:
        faiss.downcast_index(index).hnsw.efSearch = params["efSearch"]
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = params["nprobe"]


@dataclass
class Row:
    kind: str
    factory: str
    params: dict[str, int]
    ours: Side
    plain: Side
    plain_shared: bool
    inner_p50_ms: float


def bench_dataset(base: np.ndarray, queries: np.ndarray, kinds: Sequence[str], args: argparse.Namespace
                  ) -> tuple[list[Row], dict[str, faiss.Index], np.ndarray]:
    """Every kind through embtune and through faiss on one dataset."""
    from core.collection import Collection

    k = args.k
    _, truth = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    ids = [str(position) for position in range(len(base))]
    plain_indexes: dict[str, tuple[faiss.Index, float]] = {}
    rows: list[Row] = []
    for kind in kinds:
        ours, plain = Side(), Side()
        collection = Collection(base.shape[1], index_kind=kind)

        def build(collection: Collection = collection) -> None:
            collection.add(ids, base)
            collection.search(queries[0], k)  # the index is built on first use

        ours.build_s = timed(build)
        stats = collection.stats()
        factory, params = stats["index_factory"], stats["search_params"]
        shared = factory in plain_indexes
        if not shared and args.reuse_index:  # faiss searched straight on embtune's own index object
            plain_indexes[factory] = (collection._ensure_index(), float("nan"))
        elif not shared:
            plain_indexes[factory] = build_plain(factory, base)
        index, plain.build_s = plain_indexes[factory]
        set_plain_params(index, params)

        results: dict[str, object] = {}

        def ours_batch(collection: Collection = collection, results: dict = results) -> None:
            results["ours"] = collection.search_many(queries, k)

        def plain_batch(index: faiss.Index = index, results: dict = results) -> None:
            results["plain"] = index.search(queries, k)[1]

        batches = interleaved_batches({"ours": ours_batch, "plain": plain_batch}, args.rounds)
        ours.batch_s, plain.batch_s = batches["ours"], batches["plain"]
        ours.recall = recall_at_k(hits_to_positions(results["ours"], k), truth)
        plain.recall = recall_at_k(results["plain"], truth)
        # Diagnostic third contender: the faiss call embtune makes (its own index object with
        # its search parameters), without embtune's Python around it. Private attributes on
        # purpose: it splits the single-query gap into "wrapper Python" and "faiss id map".
        from core.collection.search import search_parameters

        inner_index = collection._ensure_index()
        inner_params = search_parameters(inner_index, collection.info.search_params)
        singles = interleaved_singles(
            {
                "ours": lambda i, collection=collection: collection.search(queries[i], k),
                "inner": lambda i, inner_index=inner_index, inner_params=inner_params: inner_index.search(
                    queries[i:i + 1], k, params=inner_params),
                "plain": lambda i, index=index: index.search(queries[i:i + 1], k),
            },
            len(queries), args.latency_budget,
        )
        ours.single_ms, plain.single_ms = singles["ours"], singles["plain"]
        if args.ours_sweep and kind == args.baseline_kind:
            sweep_ours(collection, queries, truth, args)
        rows.append(Row(kind, factory, params, ours, plain, shared, float(np.percentile(singles["inner"], 50))))
        print(f"  {kind:5s} -> {factory}: built in {ours.build_s:.1f} s (faiss {plain.build_s:.1f} s), "
              f"{ours.qps(len(queries)):.0f} q/s, recall@{k} {ours.recall:.3f}", file=sys.stderr, flush=True)
        del collection, results
        gc.collect()
    return rows, {factory: pair[0] for factory, pair in plain_indexes.items()}, truth


def print_table(title: str, rows: list[Row], queries: int, k: int) -> None:
    print(f"\n### {title}\n")
    print(f"| kind | resolved factory | search params | build s embtune / faiss | q/s batch embtune / faiss "
          f"| q/s ratio | single p50 ms embtune / its own faiss call / faiss | single p99 ms embtune / faiss "
          f"| single queries | recall@{k} embtune / faiss |")
    print("|---|---|---|---|---|---:|---|---|---:|---|")
    for row in rows:
        params = ", ".join(f"{key}={value}" for key, value in row.params.items()) or "-"
        shared = "*" if row.plain_shared else ""
        ours, plain = row.ours, row.plain
        print(f"| {row.kind} | {row.factory} | {params} | {ours.build_s:.2f} / {plain.build_s:.2f}{shared} "
              f"| {ours.qps(queries):.0f} / {plain.qps(queries):.0f} "
              f"| {ours.qps(queries) / plain.qps(queries):.3f} "
              f"| {ours.pct(50):.3f} / {row.inner_p50_ms:.3f} / {plain.pct(50):.3f} "
              f"| {ours.pct(99):.3f} / {plain.pct(99):.3f} "
              f"| {len(ours.single_ms)} | {ours.recall:.4f} / {plain.recall:.4f} |")
    if any(row.plain_shared for row in rows):
        print("\n\\* faiss side shared with the row of the same factory (built once).")


def sweep(title: str, indexes: dict[str, faiss.Index], queries: np.ndarray, truth: np.ndarray,
          args: argparse.Namespace) -> None:
    """Try efSearch / nprobe values on the plain indexes; mark settings meeting the target."""
    k = truth.shape[1]
    print(f"\n### sweep: {title} (plain faiss; target recall@{k} ≥ {TARGET_RECALL} at ≤ {TARGET_MS} ms "
          f"single-query p50)\n")
    print(f"| factory | setting | recall@{k} | batch ms/query (2 threads) | single p50 ms | single p99 ms | meets |")
    print("|---|---|---:|---:|---:|---:|---|")
    singles = min(len(queries), args.sweep_singles)
    for factory, index in indexes.items():
        if factory.startswith("HNSW"):
            target, name = faiss.downcast_index(index).hnsw, "efSearch"
            values = args.ef_values
        elif factory.startswith("IVF"):
            target, name = faiss.extract_index_ivf(index), "nprobe"
            values = [value for value in args.nprobe_values if value <= target.nlist]
        else:
            continue
        original = getattr(target, name)
        for value in values:
            setattr(target, name, value)
            seconds = timed(lambda index=index: index.search(queries, k))
            _, found = index.search(queries, k)
            recall = recall_at_k(found, truth)
            single = np.empty(singles)
            for position in range(singles):
                start = time.perf_counter_ns()
                index.search(queries[position:position + 1], k)
                single[position] = (time.perf_counter_ns() - start) / 1e6
            p50, p99 = np.percentile(single, 50), np.percentile(single, 99)
            meets = "yes" if recall >= TARGET_RECALL and p50 <= TARGET_MS else ""
            print(f"| {factory} | {name}={value} | {recall:.4f} | {seconds * 1000 / len(queries):.3f} "
                  f"| {p50:.3f} | {p99:.3f} | {meets} |")
        setattr(target, name, original)


@dataclass
class Baseline:
    """``auto`` against plain HNSW32 at one size."""

    size: int
    ours: str
    ours_ms: float
    ours_recall: float
    ours_build_s: float
    ours_bytes: float
    plain_ms: float
    plain_recall: float
    plain_build_s: float
    plain_bytes: float


def bench_baseline(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, row: Row, ef: int,
                   plain_indexes: dict[str, faiss.Index], args: argparse.Namespace) -> Baseline:
    """embtune's ``auto`` row against plain faiss HNSW32 (flat codes) at efSearch ``ef``, single queries on
    one thread each, interleaved."""
    from core.collection.policy import index_bytes_per_vector

    if "HNSW32" in plain_indexes and row.factory == "HNSW32":
        index, build_s = plain_indexes["HNSW32"], row.plain.build_s
    else:
        index, build_s = build_plain("HNSW32", base)
    faiss.downcast_index(index).hnsw.efSearch = ef
    k = truth.shape[1]
    found = np.full((len(queries), k), -1, dtype=np.int64)
    single: list[float] = []
    faiss.omp_set_num_threads(1)  # what embtune does for a single query: the same footing
    try:
        for position in range(len(queries)):
            start = time.perf_counter_ns()
            found[position] = index.search(queries[position:position + 1], k)[1][0]
            single.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        faiss.omp_set_num_threads(os.cpu_count() or 1)
    ours_index = plain_indexes[row.factory]
    stored_copy = 0 if row.factory.startswith("HNSW32") and "SQ" not in row.factory else 4 * base.shape[1]
    return Baseline(
        size=len(base), ours=f"{row.factory} ({', '.join(f'{key}={value}' for key, value in row.params.items())})",
        ours_ms=row.ours.pct(50), ours_recall=row.ours.recall, ours_build_s=row.ours.build_s,
        ours_bytes=index_bytes_per_vector(ours_index) + stored_copy,
        plain_ms=float(np.percentile(single, 50)), plain_recall=recall_at_k(found, truth), plain_build_s=build_s,
        plain_bytes=index_bytes_per_vector(index))


def print_baselines(rows: list[Baseline], ef: int, k: int, project_to: int) -> None:
    from core.collection.policy import resolve_index_kind

    print(f"\n### embtune vs plain faiss HNSW32 (float vectors in the graph, efSearch={ef})\n")
    print("What `auto` resolves to: " + "; ".join(f"{row.size:,} → {resolve_index_kind('auto', row.size, 384)[0]}"
                                               for row in rows) + "\n")
    print(f"| items | embtune | single p50 ms embtune / faiss | ratio | recall@{k} embtune / faiss "
          f"| build s embtune / faiss | bytes per item embtune / faiss |")
    print("|---:|---|---|---:|---|---|---|")
    for row in rows:
        print(f"| {row.size:,} | {row.ours} | {row.ours_ms:.3f} / {row.plain_ms:.3f} "
              f"| {row.plain_ms / row.ours_ms:.2f}× "
              f"| {row.ours_recall:.4f} / {row.plain_recall:.4f} | {row.ours_build_s:.0f} / {row.plain_build_s:.0f} "
              f"| {row.ours_bytes:.0f} / {row.plain_bytes:.0f} |")
    print("\nembtune's bytes per item count its index and the float copy of the vectors it keeps for re-ranking "
          "(plain HNSW32 keeps the floats inside its graph).")
    if len(rows) < 2:
        return
    small, large = rows[0], rows[-1]
    # HNSW: build time grows as n·log n, a query's cost as log n (graph depth); memory is linear.
    grow = math.log(project_to) / math.log(large.size)
    def latency(a: float, b: float) -> float:
        slope = (b - a) / (math.log(large.size) - math.log(small.size))
        return b + slope * (math.log(project_to) - math.log(large.size))
    print(f"\n**Projection to {project_to:,} items** (from the {small.size:,} and {large.size:,} rows; latency as "
          f"a + b·log n, build as n·log n, memory linear; not measured):\n")
    print("| | single p50 ms | build hours (2 cores) | memory GiB |")
    print("|---|---:|---:|---:|")
    for name, a_ms, b_ms, build_s, bytes_per in (
            ("embtune", small.ours_ms, large.ours_ms, large.ours_build_s, large.ours_bytes),
            ("plain HNSW32", small.plain_ms, large.plain_ms, large.plain_build_s, large.plain_bytes)):
        build_h = build_s * project_to / large.size * grow / 3600
        print(f"| {name} | {latency(a_ms, b_ms):.3f} | {build_h:.1f} | {bytes_per * project_to / 2**30:.1f} |")


def sweep_ours(collection: object, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace) -> None:
    """Single-query p50 and recall through ``Collection.search`` for efSearch × re-rank factor on the very
    index just measured (what policy.py's constants choose between)."""
    k = truth.shape[1]
    chosen = dict(collection.info.search_params)
    print(f"\n### sweep through embtune ({collection.stats()['index_factory']}, {len(collection):,} items; one "
          f"query per call, {args.sweep_singles} queries)\n")
    print(f"| efSearch | re-rank factor | recall@{k} | single p50 ms | single p99 ms "
          f"| meets ≤ 0.5 ms, ≥ {TARGET_RECALL} |")
    print("|---:|---:|---:|---:|---:|---|")
    for ef in args.ef_values:
        for factor in args.refine_values:
            collection.info.search_params = {**chosen, "efSearch": ef, "refine_k_factor": factor}
            singles = min(len(queries), args.sweep_singles)
            found = np.full((singles, k), -1, dtype=np.int64)
            times = np.empty(singles)
            for position in range(singles):
                start = time.perf_counter_ns()
                hits = collection.search(queries[position], k)
                times[position] = (time.perf_counter_ns() - start) / 1e6
                found[position, :len(hits)] = [int(hit.id) for hit in hits]
            recall = recall_at_k(found, truth[:singles])
            p50 = float(np.percentile(times, 50))
            meets = "yes" if recall >= TARGET_RECALL and p50 <= 0.5 else ""
            print(f"| {ef} | {factor} | {recall:.4f} | {p50:.3f} | {np.percentile(times, 99):.3f} | {meets} |",
                  flush=True)
    collection.info.search_params = chosen


def int_list(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int_list, default=[10_000, 100_000],
                        help="synthetic collection sizes, comma separated (full run: 10000,100000,1000000)")
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--kinds", default="flat,hnsw,ivf,auto", help="index kinds, comma separated")
    parser.add_argument("--queries", type=int, default=1000, help="queries per dataset (not in the base set)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved batch-search rounds (median)")
    parser.add_argument("--latency-budget", type=float, default=20.0,
                        help="seconds per kind for one-at-a-time queries (flat at 1M is slow; at least 20 are run)")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--intrinsic-dim", type=int, default=24, help="dimension of the synthetic spread subspace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real", type=int, default=0,
                        help="also benchmark N real embedded texts (N-queries in the index); ~2-3 min per 20k")
    parser.add_argument("--real-cache", type=Path, default=None,
                        help="an .npz file to keep the real embeddings in between runs")
    parser.add_argument("--sweep", action="store_true", help="try efSearch/nprobe values on the faiss indexes")
    parser.add_argument("--ef-values", type=int_list, default=[16, 32, 64, 96, 128, 192, 256, 384, 512])
    parser.add_argument("--nprobe-values", type=int_list, default=[8, 16, 32, 64, 128, 256, 512])
    parser.add_argument("--sweep-singles", type=int, default=300, help="one-at-a-time queries per sweep setting")
    parser.add_argument("--baseline", type=int, default=0, metavar="EF",
                        help="also compare --baseline-kind with plain faiss HNSW32 at efSearch EF")
    parser.add_argument("--baseline-kind", default="auto", help="the kind compared with plain HNSW32 (in --kinds)")
    parser.add_argument("--reuse-index", action="store_true",
                        help="the faiss side searches embtune's own index object instead of building the same "
                             "factory again (saves a build per kind at 1M; faiss build time then not shown)")
    parser.add_argument("--ours-sweep", action="store_true",
                        help="sweep --ef-values × --refine-values through Collection.search for --baseline-kind")
    parser.add_argument("--refine-values", type=int_list, default=[1, 2, 3])
    parser.add_argument("--project-to", type=int, default=10_000_000, help="size the baseline projection is for")
    args = parser.parse_args(argv)
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]

    from core.collection import policy as core_index

    print(f"# search benchmark: {machine_line()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    print(f"# embtune defaults: AUTO_FLAT_MAX_ITEMS={core_index.AUTO_FLAT_MAX_ITEMS}, HNSW_M={core_index.HNSW_M}, "
          f"HNSW_EF_CONSTRUCTION={core_index.HNSW_EF_CONSTRUCTION}, HNSW_EF_SEARCH={core_index.HNSW_EF_SEARCH} "
          f"({core_index.HNSW_EF_SEARCH_LARGE} from {core_index.HNSW_LARGE_FROM_ITEMS:,} items), "
          f"IVF_NPROBE_FRACTION={core_index.IVF_NPROBE_FRACTION:g}")
    print(f"# {args.queries} queries per dataset, k={args.k}; batch = one search_many / index.search call over all "
          f"queries, median of {args.rounds} interleaved rounds; single = one query per call, embtune and faiss "
          f"alternating, up to {args.latency_budget:g} s per kind; recall@{args.k} against exact search (faiss.knn)")
    print("# faiss side: faiss.index_factory with the factory embtune resolved, the same efConstruction, "
          "efSearch/nprobe and IVF training sample, no id map")
    snapshot = cpu_snapshot()

    datasets: list[tuple[str, Callable[[], tuple[np.ndarray, np.ndarray, str]]]] = []
    for size in args.sizes:
        def make(size: int = size) -> tuple[np.ndarray, np.ndarray, str]:
            options = {"clusters": args.clusters, "intrinsic": args.intrinsic_dim, "seed": args.seed}
            base = synthetic(size, args.dimension, stream=1, **options)
            queries = synthetic(args.queries, args.dimension, stream=2, **options)
            note = (f"{size:,} synthetic vectors, d={args.dimension}: {args.clusters} Gaussian clusters spread in a "
                    f"{args.intrinsic_dim}-d subspace, normalised; queries drawn the same way. Clustered synthetic "
                    f"data is easy for HNSW (its recall here is optimistic) but, with overlapping clusters, harder "
                    f"for IVF than real embeddings: read recall on the real-embedding table too")
            return base, queries, note
        datasets.append((f"synthetic, {size:,} vectors", make))
    if args.real:
        def make_real() -> tuple[np.ndarray, np.ndarray, str]:
            vectors, origin = real_embeddings(args.real, args.seed, args.real_cache)
            held_out = min(args.queries, len(vectors) // 5)
            return vectors[held_out:], vectors[:held_out], f"real embeddings: {origin}; {held_out} held out as queries"
        datasets.append(("real embeddings", make_real))

    baselines: list[Baseline] = []
    for title, make in datasets:
        print(f"{title}: preparing data", file=sys.stderr, flush=True)
        base, queries, note = make()
        rows, plain_indexes, truth = bench_dataset(base, queries, kinds, args)
        print_table(f"{title} ({len(base):,} in the index)", rows, len(queries), args.k)
        print(f"\n{note}.")
        if args.sweep:
            sweep(f"{title} ({len(base):,})", plain_indexes, queries, truth, args)
        auto = next((row for row in rows if row.kind == args.baseline_kind), None)
        if args.baseline and auto is not None and title.startswith("synthetic"):
            print(f"{title}: plain HNSW32 baseline", file=sys.stderr, flush=True)
            baselines.append(bench_baseline(base, queries, truth, auto, args.baseline, plain_indexes, args))
        sys.stdout.flush()
        del base, queries, rows, plain_indexes
        gc.collect()
    if baselines:
        print_baselines(baselines, args.baseline, args.k, args.project_to)
    print(f"\n# {cpu_report(snapshot)}")


if __name__ == "__main__":
    main()
