"""The streamed build: a collection written from batches of items (Parquet shards from the Ray path)
without ever holding all their vectors — the index trained on a sample, items added batch by batch,
vectors and items streamed to disk in the same format and commit protocol as ``Collection.save``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd

from core.collection.disk import (
    CollectionInfo,
    checked_vectors,
    discard,
    estimated_bytes,
    generation_files,
    json_safe,
    publish,
    stage,
    write_index,
    write_items,
)
from core.collection.policy import new_index, resolve_index_kind, training_rows
from core.errors import CollectionError
from core.progress import CancelToken, ProgressCallback, ProgressReporter
from storage.workspace import atomic_path, require_free_space, write_error

ItemBatch = tuple[Sequence[str], np.ndarray, Sequence["str | None"], Sequence[Mapping[str, Any]]]


def save_streamed(
    folder: str | Path,
    batches: Callable[[], Iterable[ItemBatch]],
    *,
    count: int,
    dimension: int,
    index_kind: str = "auto",
    model_id: str | None = None,
    model_fingerprint: str | None = None,
    model_spec: str | None = None,
    describe_position: Callable[[int], str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    publish_now: bool = True,
) -> CollectionInfo:
    """Write a collection from batches of items, never holding all their vectors; ``Collection.load`` reads it.

    The files and the commit protocol are those of ``Collection.save`` (a new generation, then the manifest).
    ``batches()`` must give the same ``count`` items in the same order on every call: it is read once to
    draw the training sample (only for kinds that train, e.g. IVF-PQ) and once to add the items, writing
    vectors and items to disk as they pass. Peak memory is the index (56 bytes per 384-d vector for
    IVF-PQ), the training sample, one batch, and 16 bytes per item to check that ids are unique.
    ``describe_position(i)`` names where item ``i`` came from in an error (e.g. shard and row).
    ``publish_now=False`` stages the generation only, as ``Collection.save`` does.
    """
    folder = Path(folder)
    if count <= 0:
        raise CollectionError("there are no items to index")
    factory, params = resolve_index_kind(index_kind, count, dimension)
    index = new_index(dimension, factory, params)
    folder.mkdir(parents=True, exist_ok=True)
    require_free_space(folder, estimated_bytes(count, dimension), what=f"collection {folder.name}")
    generation, names = generation_files(folder)
    try:
        _write_generation(folder, names, batches, index, count=count, dimension=dimension, factory=factory,
                          model_id=model_id, describe_position=describe_position, progress=progress, cancel=cancel)
    except BaseException as exc:
        discard(folder, generation)
        if isinstance(exc, OSError):
            raise write_error(exc, f"collection {folder}") from None
        raise
    info = CollectionInfo(dimension=dimension, index_kind=index_kind, index_factory=factory, model_id=model_id,
                          model_fingerprint=model_fingerprint, model_spec=model_spec, generation=generation,
                          search_params={k: v for k, v in params.items() if k != "efConstruction"})
    stage(folder, names, info, count)
    if publish_now:
        publish(folder, generation)
    return info


def _write_generation(folder: Path, names: Mapping[str, str], batches: Callable[[], Iterable[ItemBatch]],
                      index: faiss.Index, *, count: int, dimension: int, factory: str, model_id: str | None,
                      describe_position: Callable[[int], str] | None, progress: ProgressCallback | None,
                      cancel: CancelToken | None) -> None:
    """The generation's vectors, items and index files (the index trained on a sample when its kind trains)."""
    with ProgressReporter("build index", count, callback=progress, cancel=cancel) as reporter:
        if not index.is_trained:
            index.train(_streamed_sample(batches(), count, training_rows(factory, count), dimension, model_id))
        hashes: list[np.ndarray] = []
        written = 0
        with atomic_path(folder / names["vectors"]) as vectors_tmp, open(vectors_tmp, "wb") as vectors_out, \
                atomic_path(folder / names["items"]) as items_tmp, open(items_tmp, "w", encoding="utf-8") as items_out:
            np.lib.format.write_array_header_1_0(
                vectors_out, {"descr": "<f4", "fortran_order": False, "shape": (count, dimension)})
            for ids, vectors, texts, metadata in batches():
                ids = [str(item_id) for item_id in ids]
                vectors = checked_vectors(vectors, len(ids), dimension, model_id)
                if written + len(ids) > count:
                    raise CollectionError(f"the batches hold more than the {count} items announced")
                index.add(vectors)
                vectors_out.write(vectors.astype("<f4", copy=False).tobytes())
                write_items(items_out, ids, texts, [json_safe(dict(meta)) for meta in metadata])
                hashes.append(pd.util.hash_array(np.asarray(ids, dtype=object)))
                written += len(ids)
                reporter.advance(len(ids))
            if written != count:
                raise CollectionError(f"the batches held {written} items, {count} were announced")
            _check_unique_ids(np.concatenate(hashes), batches, describe_position)
        write_index(index, folder / names["index"])


def _streamed_sample(batches: Iterable[ItemBatch], count: int, rows: int, dimension: int,
                     model_id: str | None) -> np.ndarray:
    """About ``rows`` items drawn uniformly (a fixed seed) in one pass over the batches."""
    rng = np.random.default_rng(0)
    keep = rows / count
    parts = []
    for ids, vectors, _texts, _metadata in batches:
        vectors = checked_vectors(vectors, len(ids), dimension, model_id)
        parts.append(vectors if keep >= 1 else vectors[rng.random(len(vectors)) < keep])
    return np.ascontiguousarray(np.concatenate(parts))


def _check_unique_ids(hashes: np.ndarray, batches: Callable[[], Iterable[ItemBatch]],
                      describe_position: Callable[[int], str] | None) -> None:
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    clashes = np.flatnonzero(ordered[1:] == ordered[:-1])
    if not len(clashes):
        return
    # Equal 64-bit hashes: find the ids themselves (a true duplicate, or — almost never — a hash collision).
    pairs = {int(order[c]): int(order[c + 1]) for c in clashes[:100]}
    wanted = set(pairs) | set(pairs.values())
    found: dict[int, str] = {}
    position = 0
    for ids, *_ in batches():
        for item_id in ids:
            if position in wanted:
                found[position] = str(item_id)
            position += 1
    for first, second in sorted(pairs.items()):
        if found.get(first) == found.get(second):
            where = describe_position or (lambda p: f"item {p + 1}")
            raise CollectionError(f"id {found[first]!r} appears twice: {where(first)} and {where(second)}; "
                                  "ids must be unique")
