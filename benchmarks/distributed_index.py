"""Distributed indexing benchmark: Ray Data embedding against plain encoding, streamed index builds, IVF-PQ.

Why: ``embtune index --engine ray`` (core/distributed.py) exists for corpora that one machine cannot
embed in time. This measures, in one run, what it costs and what it buys:

1. **Encode rate.** The same texts embedded by the bundled MiniLM (a) in this process on one torch
   thread (the per-core rate; ``--plain-two-threads`` adds two threads), (b) by Ray with one actor ×
   one thread and (c) Ray with two actors × one thread each, through the whole ``index_with_ray``
   path (read shards, embed, write Parquet parts). Ray's rate is given twice: steady (rows between
   the first and the last batch that came back) and end to end (actor start-up, model loads, part
   writes included).
   Targets: Ray's steady overhead ≤ 15 % of the plain 1-thread rate; 2 actors ≥ 1.7× one actor.
2. **Peak memory of the index build from parts** (``core.collection.save_streamed``) at two sizes, in a
   fresh child process each (its peak RSS), on synthetic 384-d vectors written as parts of 50 000
   rows. Target: flat — it streams — while holding all vectors would grow by 1.5 KB per row.
3. **Peak memory of the whole ``index_with_ray`` pipeline** (read shards, embed on 2 actors, write parts,
   build the index, save the items) at the same two sizes, in a fresh child process that starts its own
   Ray runtime: the driver's peak RSS and the peak proportional set size (PSS: shared pages, Ray's object
   store included, counted once) of the driver and every process Ray started. The model here is a 384-d
   ``StaticEmbedding`` on the bundled MiniLM tokenizer (random token vectors, averaged): it embeds thousands
   of texts/s, so 400k rows take minutes rather than the ~100 min MiniLM takes on 2 cores; what the
   pipeline holds depends on rows, dimension and block sizes, not on the model's depth. Target: flat.
4. **Recall@10 against exact search and bytes per vector** of the large-collection kinds on the
   real embeddings from step 1 (base) and held-out texts (queries).

Real texts: the bundled catalogue's names and descriptions, then MedQuAD questions and answer
sentences from ../shared/data/medquad when present (read in place, never copied): short texts.

Run from the repository root (the machine should be quiet: Ray's workers run at nice 15)::

    .venv/bin/python benchmarks/distributed_index.py
    .venv/bin/python benchmarks/distributed_index.py --rows 20000 --steps 1,4   # docs' tables 1 and 4
    .venv/bin/python benchmarks/distributed_index.py --rows 12000 --memory-sizes 100000,400000 --plain-two-threads
    .venv/bin/python benchmarks/distributed_index.py --steps 3      # only the pipeline's memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local data only: never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cpu_report, cpu_snapshot, machine_line
from search import real_texts, synthetic

DIMENSION = 384


# -- 1. encode rate ------------------------------------------------------------------------------


def plain_rate(embedder, texts: list[str], threads: int) -> float:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        embedder.encode(texts[:256], show_progress=False)  # warm-up
        start = time.perf_counter()
        embedder.encode(texts, show_progress=False)
        return len(texts) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def padded_tokens(embedder, texts: list[str], call_rows: int) -> int:
    """Tokens the model runs on when ``texts`` come in calls of ``call_rows``: each call is sorted by length
    and cut into batches padded to their longest text (what an actor's ``encode`` does with its batch)."""
    tokenizer, limit = embedder.model.tokenizer, embedder.model.max_seq_length
    lengths = np.array([min(limit, len(ids)) for ids in tokenizer(texts)["input_ids"]])
    total = 0
    for start in range(0, len(lengths), call_rows):
        ordered = np.sort(lengths[start:start + call_rows])[::-1]
        total += sum(int(ordered[i]) * len(ordered[i:i + embedder.batch_size])
                     for i in range(0, len(ordered), embedder.batch_size))
    return total


def write_shards(texts: list[str], folder: Path, shard_rows: int, *, source_column: bool = False) -> None:
    """``texts`` as Parquet shards with ids ``t0, t1, …``; ``source_column`` adds a metadata column."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, len(texts), shard_rows)):
        positions = range(start, min(len(texts), start + shard_rows))
        columns = {"id": [f"t{i}" for i in positions], "text": texts[start:start + shard_rows]}
        if source_column:
            columns["source"] = ["catalogue" if i % 3 == 0 else "medquad" for i in positions]
        pd.DataFrame(columns).to_parquet(folder / f"shard-{number:04d}.parquet", index=False)


def ray_rate(embedder, shards: Path, workspace_root: Path, *, workers: int, threads: int) -> dict[str, float]:
    from core.collection.ray_index import index_with_ray
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open(workspace_root)
    db = Database(workspace.db_url())
    events: list[tuple[float, int]] = []

    def seen(progress) -> None:
        if progress.task == "embed shards" and progress.done:
            events.append((time.perf_counter(), progress.done))

    start = time.perf_counter()
    report = index_with_ray(shards, collection=f"ray{workers}x{threads}", text_column="text", id_column="id",
                            workspace=workspace, db=db, embedder=embedder, workers=workers, threads=threads,
                            progress=seen, index_kind="flat")
    embedded_at, rows = events[-1]
    first_at, first_rows = events[0]
    steady = (rows - first_rows) / (embedded_at - first_at) if embedded_at > first_at else float("nan")
    return {"steady": steady, "end_to_end": rows / (embedded_at - start), "rows": rows,
            "seconds": embedded_at - start, "collection": report.path}


# -- 2. build memory ----------------------------------------------------------------------------


def write_synthetic_parts(folder: Path, rows: int, part_rows: int = 50_000) -> None:
    """Parts in core.collection.ray_index's layout (row, id, text, metadata, vector) holding clustered unit vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.collection.ray_index import PART_ROW_GROUP

    folder.mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, rows, part_rows)):
        count = min(part_rows, rows - start)
        vectors = synthetic(count, DIMENSION, clusters=1000, intrinsic=24, seed=0, stream=10 + number)
        table = pa.table({
            "row": pa.array(range(count), pa.int64()),
            "id": pa.array([f"v{start + i}" for i in range(count)]),
            "text": pa.array([f"item {start + i}" for i in range(count)]),
            "metadata": pa.array(["{}"] * count),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIMENSION),
        })
        pq.write_table(table, folder / f"part-{number:05d}.parquet", row_group_size=PART_ROW_GROUP)


def memory_status() -> dict[str, int]:
    """This process's resident set now (VmRSS) and its peak (VmHWM), in bytes (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            fields[line.split(":")[0]] = int(line.split()[1]) * 1024
    return fields


def build_child(parts: Path, out: Path, kind: str) -> None:
    """Child process: build a collection from the parts; print seconds, peak RSS and bytes per vector.

    The imports (torch comes with core.collection.ray_index) are resident before the build starts; the peak is
    reset after them (``/proc/self/clear_refs``), so it measures what the build itself adds.
    """
    import pyarrow.parquet as pq

    from core.collection import save_streamed
    from core.collection.ray_index import _part_batches  # the batches index_with_ray builds from

    files = sorted(parts.glob("part-*.parquet"))
    count = sum(pq.read_metadata(f).num_rows for f in files)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = memory_status()["VmRSS"]
    start = time.perf_counter()
    info = save_streamed(out, _part_batches(files), count=count, dimension=DIMENSION, index_kind=kind)
    seconds = time.perf_counter() - start
    index_file = out / f"index-{info.generation}.faiss"
    print(json.dumps({"rows": count, "seconds": seconds, "factory": info.index_factory,
                      "peak_rss": memory_status()["VmHWM"], "before_rss": before,
                      "index_bytes_per_vector": index_file.stat().st_size / count}))


def build_memory(rows: int, kind: str, scratch: Path) -> dict[str, float]:
    parts = scratch / f"parts-{rows}"
    write_synthetic_parts(parts, rows)
    result = subprocess.run([sys.executable, __file__, "--build-child", str(parts), str(scratch / f"coll-{rows}"),
                             kind], capture_output=True, text=True, check=True)
    shutil.rmtree(parts, ignore_errors=True)
    shutil.rmtree(scratch / f"coll-{rows}", ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- 3. memory of the whole pipeline --------------------------------------------------------------


def static_model_dir(folder: Path) -> Path:
    """A 384-d ``StaticEmbedding`` model on the bundled MiniLM tokenizer, saved as a local model folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    from core.embedders import load_embedder

    tokenizer = load_embedder("default", device="cpu", fallback=False, cache=False).model.tokenizer
    torch.manual_seed(0)
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_dim=DIMENSION)],
                        device="cpu").save(str(folder))
    return folder


def process_tree_pss() -> tuple[int, int]:
    """(this process's PSS, the PSS of every process it started, Ray's included), in bytes."""
    import psutil

    me = psutil.Process()
    others = 0
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            others += child.memory_full_info().pss
    return me.memory_full_info().pss, others


def pipeline_child(shards: Path, workspace_root: Path, model: Path, kind: str) -> None:
    """Child process: ``index_with_ray`` on 2 actors; print seconds, the driver's peak RSS, the tree's peak PSS."""
    import threading

    import ray

    from core.collection.ray_index import index_with_ray
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open(workspace_root)
    db = Database(workspace.db_url())
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(workspace_root / "ray"), log_to_driver=False)
    peaks = {"tree": 0, "others": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            mine, others = process_tree_pss()
            peaks["tree"] = max(peaks["tree"], mine + others)
            peaks["others"] = max(peaks["others"], others)

    Path("/proc/self/clear_refs").write_text("5")  # the driver's peak counts from here (imports, Ray started)
    before = memory_status()["VmRSS"]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        report = index_with_ray(shards, collection="memory", text_column="text", id_column="id",
                                workspace=workspace, db=db, model=str(model), fallback=False, workers=2, threads=1,
                                index_kind=kind)
    finally:
        done.set()
        sampler.join()
        ray.shutdown()
    print(json.dumps({"rows": report.count, "seconds": time.perf_counter() - start, "factory": report.index_factory,
                      "driver_before": before, "driver_peak": memory_status()["VmHWM"],
                      "tree_peak": peaks["tree"], "others_peak": peaks["others"]}))


def pipeline_memory(rows: int, texts: list[str], model: Path, kind: str, scratch: Path) -> dict[str, float]:
    shards = scratch / f"text-shards-{rows}"
    # Real texts cycled to ``rows``, each with its row number so that no two are equal.
    write_shards([f"{texts[i % len(texts)]} #{i}" for i in range(rows)], shards, 10_000, source_column=True)
    try:
        result = subprocess.run([sys.executable, __file__, "--pipeline-child", str(shards),
                                 str(scratch / f"ws-{rows}"), str(model), kind],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"pipeline child failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(shards, ignore_errors=True)
        shutil.rmtree(scratch / f"ws-{rows}", ignore_errors=True)


# -- 4. recall and bytes per vector --------------------------------------------------------------


def recall_table(base: np.ndarray, queries: np.ndarray) -> list[tuple[str, str, str, float, float, float]]:
    import faiss

    from core.collection import Collection, index_bytes_per_vector

    _, truth = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)
    ids = [str(i) for i in range(len(base))]
    rows = []
    for kind, overrides in [("hnsw", {}), ("ivfpq", {}),
                            ("IVF256,PQ48", {"nprobe": 8}), ("IVF256,PQ48", {"nprobe": 32}),
                            ("IVF256,PQ48,RFlat", {"nprobe": 8}), ("IVF256,PQ48,RFlat", {"nprobe": 32}),
                            ("ivfpq@IVF256", {"nprobe": 8}), ("ivfpq@IVF256", {"nprobe": 32}),
                            ("ivfpq@IVF256", {"nprobe": 32, "refine_k_factor": 16}),
                            ("ivfpq@IVF256", {"nprobe": 64, "refine_k_factor": 16})]:
        collection = Collection(DIMENSION, index_kind=kind.replace("ivfpq@IVF256", "IVF256,PQ48"))
        collection.add(ids, base)
        collection._ensure_index()
        if kind == "ivfpq@IVF256":  # embtune's re-ranking from stored vectors on the IVF256,PQ48
            collection.info.search_params["refine_k_factor"] = 8
        collection.info.search_params.update(overrides)
        start = time.perf_counter()
        hits = collection.search_many(queries, 10)
        ms = (time.perf_counter() - start) * 1000 / len(queries)
        found = [{int(h.id) for h in row} for row in hits]
        recall = float(np.mean([len(f & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
        rows.append((kind, collection.info.index_factory, json.dumps(collection.info.search_params), recall,
                     index_bytes_per_vector(collection._index), ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="texts to embed (step 1; the base of step 3)")
    parser.add_argument("--plain-two-threads", action="store_true", help="also time plain encoding on 2 threads")
    parser.add_argument("--shard-rows", type=int, default=750)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--memory-sizes", default="100000,400000")
    parser.add_argument("--memory-kind", default="IVF256,PQ48")
    parser.add_argument("--steps", default="1,2,3,4", help="steps to run, comma separated (4 needs 1)")
    parser.add_argument("--build-child", nargs=3, metavar=("PARTS", "OUT", "KIND"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline-child", nargs=4, metavar=("SHARDS", "WORKSPACE", "MODEL", "KIND"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_child:
        build_child(Path(args.build_child[0]), Path(args.build_child[1]), args.build_child[2])
        return
    if args.pipeline_child:
        shards, workspace, model, kind = args.pipeline_child
        pipeline_child(Path(shards), Path(workspace), Path(model), kind)
        return
    steps = {int(v) for v in args.steps.split(",") if v}
    if 4 in steps and 1 not in steps:
        parser.error("step 4 measures recall on step 1's embeddings: add step 1")
    memory_sizes = [int(v) for v in args.memory_sizes.split(",") if v]

    import faiss
    import ray
    import torch

    from core.embedders import load_embedder

    snapshot = cpu_snapshot()
    print(f"# distributed index benchmark: {machine_line()}; torch {torch.__version__}, ray {ray.__version__}, "
          f"faiss {faiss.__version__}")
    texts, origin = real_texts(args.rows + args.queries, seed=0)
    base_texts, query_texts = texts[:args.rows], texts[args.rows:]
    print(f"# {len(base_texts)} texts ({origin}), mean {np.mean([len(t) for t in base_texts]):.0f} characters; "
          f"{len(query_texts)} held-out queries")
    embedder = load_embedder("default", device="cpu", cache=False)
    scratch = Path(tempfile.mkdtemp(prefix="embtune-bench-", dir="/tmp"))
    try:
        if 1 in steps:
            print("\n## 1. Encode rate (texts/s)\n")
            rates = {"plain, 1 thread": plain_rate(embedder, base_texts, 1)}
            if args.plain_two_threads:
                rates["plain, 2 threads"] = plain_rate(embedder, base_texts, 2)
            shards = scratch / "shards"
            write_shards(base_texts, shards, args.shard_rows)
            ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(scratch / "ray"), log_to_driver=False)
            try:
                one = ray_rate(embedder, shards, scratch / "ws", workers=1, threads=1)
                two = ray_rate(embedder, shards, scratch / "ws", workers=2, threads=1)
            finally:
                ray.shutdown()
            plain = rates["plain, 1 thread"]
            print("| engine | steady texts/s | end-to-end texts/s | end-to-end s | vs plain 1 thread (steady) |")
            print("|---|---:|---:|---:|---:|")
            for name, rate in rates.items():
                print(f"| {name} | {rate:.0f} | {rate:.0f} | {len(base_texts) / rate:.1f} | {rate / plain:.2f} |")
            for name, run in (("Ray, 1 actor × 1 thread", one), ("Ray, 2 actors × 1 thread", two)):
                print(f"| {name} | {run['steady']:.0f} | {run['end_to_end']:.0f} | {run['seconds']:.1f} | "
                      f"{run['steady'] / plain:.2f} |")
            overhead = 1 - one["steady"] / plain
            print(f"\nRay's steady overhead vs plain 1 thread: {overhead:.0%} (target ≤ 15 %); "
                  f"2 actors / 1 actor: steady {two['steady'] / one['steady']:.2f}×, end to end "
                  f"{two['end_to_end'] / one['end_to_end']:.2f}× (target ≥ 1.7×)")
            from core.collection.ray_index import BATCH_ROWS

            one_sort = padded_tokens(embedder, base_texts, len(base_texts))
            print("padded tokens against one sort of all texts (plain encode), by rows per actor call: " + ", ".join(
                f"{rows}{' (BATCH_ROWS)' if rows == BATCH_ROWS else ''} "
                f"{padded_tokens(embedder, base_texts, rows) / one_sort - 1:+.0%}" for rows in (750, 1024, 2048, 4096)))
            per_core = max(plain, two["steady"] / 2)
            print(f"per-core rate used for projections: {per_core:.0f} texts/s")

        if 2 in steps:
            print("\n## 2. Peak memory of the index build from parts (child process, synthetic 384-d)\n")
            print("| rows | factory | build s | RSS before build MiB | peak RSS during build MiB | build adds MiB | "
                  "all vectors would be MiB | index bytes/vector |")
            print("|---:|---|---:|---:|---:|---:|---:|---:|")
            for rows in memory_sizes:
                result = build_memory(rows, args.memory_kind, scratch)
                added = result["peak_rss"] - result["before_rss"]
                print(f"| {rows:,} | {result['factory']} | {result['seconds']:.1f} | "
                      f"{result['before_rss'] / 2**20:.0f} | {result['peak_rss'] / 2**20:.0f} | "
                      f"{added / 2**20:.0f} | {rows * DIMENSION * 4 / 2**20:.0f} | "
                      f"{result['index_bytes_per_vector']:.1f} |")

        if 3 in steps:
            print("\n## 3. Peak memory of the whole index_with_ray pipeline (child process, 2 actors, "
                  "StaticEmbedding 384-d)\n")
            model = static_model_dir(scratch / "static-model")
            print("| rows | factory | seconds | rows/s | driver RSS before MiB | driver peak RSS MiB | "
                  "Ray processes peak PSS MiB | all processes peak PSS MiB | all vectors would be MiB |")
            print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
            for rows in memory_sizes:
                result = pipeline_memory(rows, texts, model, args.memory_kind, scratch)
                print(f"| {rows:,} | {result['factory']} | {result['seconds']:.1f} | "
                      f"{rows / result['seconds']:.0f} | {result['driver_before'] / 2**20:.0f} | "
                      f"{result['driver_peak'] / 2**20:.0f} | {result['others_peak'] / 2**20:.0f} | "
                      f"{result['tree_peak'] / 2**20:.0f} | {rows * DIMENSION * 4 / 2**20:.0f} |")

        if 4 in steps:
            print("\n## 4. Recall@10 vs exact search, bytes per vector (real embeddings from step 1)\n")
            from core.collection import Collection

            base = Collection.load(two["collection"]).vectors
            queries = embedder.encode(query_texts, show_progress=False)
            print(f"base: {len(base)} vectors (the Ray run's collection), {len(queries)} queries\n")
            print("| kind | factory | search params | recall@10 | index bytes/vector | ms/query (batch) |")
            print("|---|---|---|---:|---:|---:|")
            for kind, factory, params, recall, bytes_per_vector, ms in recall_table(base, queries):
                print(f"| {kind} | {factory} | {params} | {recall:.3f} | {bytes_per_vector:.1f} | {ms:.3f} |")
    finally:
        for _ in range(5):  # Ray's exiting processes may still write session logs under scratch for a moment
            shutil.rmtree(scratch, ignore_errors=True)
            if not scratch.exists():
                break
            time.sleep(1)
    print(f"\n# {cpu_report(snapshot)}")


if __name__ == "__main__":
    main()
