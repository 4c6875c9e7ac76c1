"""Shards and the Ray runtime for indexing corpora larger than one machine: listing and checking the
input shards, starting or joining a runtime, the read task and the embedding actor, and how many actors.

``core.collection.ray_index`` drives them; its docstring tells the whole pipeline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data.formats import SUPPORTED_SUFFIXES, read_jsonl_records, read_table, table_format
from core.data.validate import require_columns, validate_items
from core.errors import DataError, EmbtuneError, ModelLoadError

logger = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'embtune[ray]'"
# Actors hold this share of the CPUs Ray gives them, the rest is left to read tasks and the driver.
ACTOR_CPU_SHARE = 0.9
# How long to wait for a Ray address to answer before saying it cannot be reached.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Shard:
    """One input table: its position in the sorted input, its path, and what identifies its content."""

    index: int
    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, index: int, path: Path) -> Shard:
        stat = path.stat()
        return cls(index, path.resolve(), stat.st_size, stat.st_mtime_ns)


def list_shards(source: str | Path) -> list[Shard]:
    """The tables to index: ``source`` itself, or the supported files in the folder ``source``, by name."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: file or folder not found")
    if source.is_file():
        table_format(source)  # refuses an unsupported suffix with one line
        return [Shard.of(0, source)]
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise DataError(f"{source}: folder holds no .csv, .tsv, .jsonl or .parquet shards")
    return [Shard.of(i, path) for i, path in enumerate(files)]


def check_shard_columns(shard: Path, columns: list[str]) -> None:
    """Refuse a shard without a named column, from its header only (nothing else is read)."""
    kind = table_format(shard)
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            present = pq.read_schema(shard).names
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise DataError(f"{shard}: not a readable Parquet file ({str(exc).splitlines()[0][:160]})") from None
    elif kind == "jsonl":
        with open(shard, encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
        records = read_jsonl_records(shard, first) if first else []
        present = list(records[0][1]) if records else []
    else:
        import csv

        with open(shard, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter="\t" if kind == "tsv" else ","), [])
        present = [column.strip() for column in header]
    import pandas as pd

    require_columns(pd.DataFrame(columns=present), columns, shard)


# -- the Ray side ---------------------------------------------------------------------------------


def import_ray() -> Any:
    """Ray, or one line saying how to install it."""
    try:
        import ray
        import ray.data  # Ray without its data extra cannot run the pipeline
    except ImportError:
        raise EmbtuneError(f"--engine ray needs Ray Data, which is not installed: {RAY_EXTRA}") from None
    return ray


@contextlib.contextmanager
def ray_runtime(address: str | None = None, *, temp_dir: str | None = None) -> Iterator[Any]:
    """A Ray runtime: the one already started in this process, a cluster at ``address``, or a local one.

    One that this function starts is shut down when the block ends.
    """
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        options["address"] = address
    else:
        options.update(num_cpus=os.cpu_count() or 1, include_dashboard=False)
        if temp_dir:
            options["_temp_dir"] = temp_dir
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise EmbtuneError(f"cannot connect to {where}: {str(exc).strip().splitlines()[0][:200]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str) -> None:
    """Fail in seconds, with one line, on an address nothing answers at (``ray.init`` would wait long)."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise EmbtuneError(f"Ray address {address!r} must look like HOST:PORT (e.g. 10.0.0.1:6379) or ray://HOST:PORT")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise EmbtuneError(f"the Ray cluster at {address} is not reachable ({exc.strerror or exc}): start it with "
                           "`ray start --head` there, or leave out --ray-address to run on this machine") from None


class EmbedActor:
    """A Ray Data actor: loads the model once, then embeds the ``text`` column of each batch it gets."""

    def __init__(self, spec: str, threads: int, device: str, fingerprint: str) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        from core.embedders import load_embedder

        self.embedder = load_embedder(spec, device=device, fallback=False, cache=False)
        self.expected_fingerprint = fingerprint
        self.checked = False

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        if not self.checked:  # a node with other weights under the same spec would mix two models' vectors
            if self.embedder.fingerprint != self.expected_fingerprint:
                raise ModelLoadError(f"model {self.embedder.spec} on node {socket.gethostname()} has other weights "
                                     "than on the driver: install the same model on every node")
            self.checked = True
        vectors = self.embedder.encode_document(batch.column("text").to_pylist(), show_progress=False)
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        return batch.append_column("vector", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))


def read_shard_rows(batch: dict[str, np.ndarray], *, text_column: str, id_column: str | None,
                     name_rows: bool, batch_rows: int) -> Iterator[Any]:
    """Ray Data read task: shard descriptors in, the shards' rows (id, text, metadata as JSON) out.

    Uses the single-process reader and validation, so every value is the string ``embtune index`` sees.
    Rows leave in slices of ``batch_rows``, so Ray can cut a large shard into several blocks.
    """
    import pyarrow as pa

    for shard, path in zip(batch["shard"].tolist(), batch["path"].tolist(), strict=True):
        frame = read_table(path)
        validate_items(frame, text_column=text_column, id_column=id_column, source=path)
        rows = len(frame)
        if id_column:
            ids = frame[id_column].astype(str).str.strip().tolist()
        elif name_rows:  # a folder: row numbers repeat across shards, so the shard's name goes first
            ids = [f"{Path(path).name}:{row + 1}" for row in range(rows)]
        else:
            ids = [str(row + 1) for row in range(rows)]
        texts = frame[text_column].fillna("").astype(str).str.strip().tolist()
        meta_columns = [c for c in frame.columns if c not in (text_column, id_column)]
        metadata = frame[meta_columns].to_dict(orient="records") if meta_columns else [{} for _ in range(rows)]
        table = pa.table({
            "shard": pa.array([shard] * rows, pa.int32()),
            "row": pa.array(range(rows), pa.int64()),
            "rows_in_shard": pa.array([rows] * rows, pa.int64()),
            "id": pa.array(ids, pa.string()),
            "text": pa.array(texts, pa.string()),
            "metadata": pa.array([json.dumps(m, ensure_ascii=False) for m in metadata], pa.string()),
        })
        for start in range(0, rows, batch_rows):
            yield table.slice(start, batch_rows)


@dataclass(frozen=True)
class ActorPlan:
    """How many embedding actors, the CPUs each reserves and the torch threads each runs."""

    workers: int
    cpus: float
    threads: int


def plan_actors(ray: Any, workers: int | None, threads: int | None = None) -> ActorPlan:
    """Actors from the runtime's CPUs: by default one per CPU with one thread (the best rate per core).

    ``threads`` overrides the torch threads per actor (otherwise: the CPUs each actor's share rounds to).
    """
    total = float(ray.cluster_resources().get("CPU", 0))
    biggest_node = max((float(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")),
                       default=total)
    if total < 1:
        raise EmbtuneError("the Ray runtime has no CPUs to run embedding actors on")
    if workers is not None and workers < 1:
        raise EmbtuneError(f"--workers must be at least 1, got {workers}")
    workers = workers or max(1, int(total))
    share = min(total / workers, biggest_node)
    return ActorPlan(workers=workers, cpus=round(share * ACTOR_CPU_SHARE, 3), threads=threads or max(1, round(share)))
