"""Indexing corpora larger than one machine: Ray Data embeds shards, the index is built from the results.

``embtune index FILE_OR_DIR --engine ray`` runs ``index_with_ray``:

1. The input is one table or a folder of shards (CSV, TSV, JSONL, Parquet; sorted by name). Every
   shard's header is checked on the driver before anything starts (a missing text column names the
   shard and the column).
2. Ray Data reads the shards with the same reader and validation as ``embtune index`` (so ids,
   texts and metadata are the same strings), cuts them into blocks of ``batch_rows`` and embeds
   them with an actor pool: the model is loaded once per actor, with as many torch threads as CPUs
   the actor holds. The read tasks are pinned to the driver's node, where the files are; only the
   embedding spreads over the cluster, so the nodes need no shared file system.
3. The driver collects each shard's rows and writes them, when complete, as one Parquet part
   ``<collection>/shards/part-NNNNN.parquet`` (id, text, metadata, vector), atomically. A part
   records the shard (path, size, mtime), the columns and the model fingerprint it was made from.
4. The collection is built from the parts by ``core.collection.save_streamed``: trained on a sample,
   filled part by part, committed atomically; all vectors are never in memory at once.

A run that dies (a crash, Ctrl-C, a lost driver) leaves only complete parts: the next run with the
same input skips the shards whose part matches and embeds the rest, so nothing is lost or doubled.
A worker that dies is restarted by Ray and its batch retried. Changing a shard, a column or the
model makes its part stale and it is embedded again.

``ray.init`` starts a local runtime with the machine's cores unless ``--ray-address`` (or
``RAY_ADDRESS``) names a cluster; a runtime the caller already started is used as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.collection.build import ItemBatch, save_streamed
from core.collection.catalogue import IndexReport, check_collection_name, collection_lock, commit_collection
from core.collection.ray_shards import (
    EmbedActor,
    Shard,
    check_reachable,
    check_shard_columns,
    import_ray,
    list_shards,
    plan_actors,
    ray_runtime,
    read_shard_rows,
)
from core.errors import CancelledError, CollectionError, DataError, EmbtuneError
from core.progress import CancelToken, ProgressCallback, ProgressReporter
from storage.db import Database
from storage.workspace import Workspace, atomic_path

logger = logging.getLogger(__name__)

PARTS_FOLDER = "shards"
# Rows per call of an actor. The encoder sorts texts by length within a call, so larger calls pad less: on the
# distributed benchmark's mixed-length texts, padded tokens against one sort of all 10 000 texts were +44 % with
# 750-row calls, +29 % with 1024, +12 % with 2048, +6 % with 4096 (256-row calls ran 40 % below the plain rate).
# 2048 keeps enough calls per actor to balance the pool on corpora of tens of thousands of rows.
BATCH_ROWS = 2048
# Parquet parts are written in row groups of this many rows, so reading them back holds one group (~25 MB).
PART_ROW_GROUP = 16_384
# Reading a shard is light next to embedding it; a read task holding a whole CPU would leave the
# actors none on a small machine and hang the pipeline (see ../shared/TESTING.md).
READ_TASK_CPUS = 0.1
# Bounds of the block size chosen so that every actor gets several blocks of the input.
MIN_BLOCK_BYTES = 64 << 10
MAX_BLOCK_BYTES = 128 << 20
_PART_KEY = b"embtune"



# -- parts in the workspace -----------------------------------------------------------------------


def _part_path(folder: Path, shard: Shard) -> Path:
    return folder / f"part-{shard.index:05d}.parquet"


def _part_record(shard: Shard, *, text_column: str, id_column: str | None, name_rows: bool,
                 fingerprint: str) -> bytes:
    """What a part was made from; a part is reused only when this is unchanged."""
    return json.dumps({"source": str(shard.path), "size": shard.size, "mtime_ns": shard.mtime_ns,
                       "text_column": text_column, "id_column": id_column, "name_rows": name_rows,
                       "model_fingerprint": fingerprint}, sort_keys=True).encode()


def _part_is_current(path: Path, record: bytes) -> bool:
    import pyarrow.parquet as pq

    if not path.exists():
        return False
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception:  # a foreign or broken file where a part should be: embed the shard again
        return False
    return metadata.get(_PART_KEY) == record


def _write_part(path: Path, tables: list[Any], record: bytes) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables(tables).sort_by("row").select(["row", "id", "text", "metadata", "vector"])
    table = table.replace_schema_metadata({_PART_KEY: record})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=PART_ROW_GROUP)


class _PartWriter:
    """Collects embedded rows (they come back in any order) and writes each shard's part once it is whole."""

    def __init__(self, folder: Path, records: dict[int, bytes], reporter: ProgressReporter, total_shards: int,
                 already: int) -> None:
        self.folder = folder
        self.records = records
        self.reporter = reporter
        self.total_shards = total_shards
        self.written = already
        self.pending: dict[int, list[Any]] = {}
        self.counts: dict[int, int] = {}

    def add(self, batch: Any) -> None:
        import pyarrow as pa

        shards = batch.column("shard").to_numpy()
        expected = batch.column("rows_in_shard").to_numpy()
        present = np.unique(shards).tolist()
        for shard in present:
            mask = shards == shard
            rows = batch if len(present) == 1 else batch.filter(pa.array(mask))
            self.pending.setdefault(shard, []).append(rows)
            self.counts[shard] = self.counts.get(shard, 0) + rows.num_rows
            whole = int(expected[mask][0])
            if self.counts[shard] == whole:
                _write_part(self.folder / f"part-{shard:05d}.parquet", self.pending.pop(shard), self.records[shard])
                self.written += 1
            elif self.counts[shard] > whole:
                raise CollectionError(f"shard {shard} came back with {self.counts[shard]} rows, it has {whole}")
        self.reporter.advance(batch.num_rows, f"{self.written} of {self.total_shards} shards embedded")


def _embed_shards(ray: Any, shards: list[Shard], folder: Path, records: dict[int, bytes], *, text_column: str,
                  id_column: str | None, name_rows: bool, spec: str, fingerprint: str, device: str,
                  workers: int | None, threads: int | None, batch_rows: int, actor_class: type,
                  reporter: ProgressReporter, total_shards: int, show_progress: bool) -> None:
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.print_on_execution_start, context.target_max_block_size)
    data_logger = logging.getLogger("ray.data")
    saved_level = data_logger.level
    plan = plan_actors(ray, workers, threads)
    logger.info("embedding %d shards with %d actors (%.2f CPUs, %d threads each)", len(shards), plan.workers,
                plan.cpus, plan.threads)
    # Blocks small enough that every actor gets several (one block per big file would leave actors idle);
    # ``.repartition`` would do it too, but its tasks want a whole CPU, which the actors hold.
    input_bytes = sum(s.size for s in shards)
    block_bytes = int(min(saved[2] or MAX_BLOCK_BYTES, max(MIN_BLOCK_BYTES, input_bytes // (4 * plan.workers))))
    here = ray.get_runtime_context().get_node_id()
    try:
        context.enable_progress_bars = context.print_on_execution_start = show_progress
        context.target_max_block_size = block_bytes
        if not show_progress:  # Ray Data logs every stage's progress at INFO on the console
            data_logger.setLevel(logging.WARNING)
        dataset = (
            ray.data.from_items([{"shard": s.index, "path": str(s.path)} for s in shards],
                                override_num_blocks=len(shards))
            .map_batches(read_shard_rows, batch_size=1, batch_format="numpy", num_cpus=READ_TASK_CPUS,
                         fn_kwargs={"text_column": text_column, "id_column": id_column, "name_rows": name_rows,
                                    "batch_rows": batch_rows},
                         label_selector={"ray.io/node-id": here})  # the files are here: read here, embed anywhere
            .map_batches(actor_class, fn_constructor_args=(spec, plan.threads, device, fingerprint),
                         batch_size=batch_rows, batch_format="pyarrow", num_cpus=plan.cpus,
                         compute=ray.data.ActorPoolStrategy(size=plan.workers))
        )
        writer = _PartWriter(folder, records, reporter, total_shards, total_shards - len(shards))
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(batch)
    except EmbtuneError:
        raise
    except Exception as exc:
        cause = _embtune_cause(exc)
        if cause is None:
            raise
        raise type(cause)(str(cause)) from None
    finally:
        context.enable_progress_bars, context.print_on_execution_start, context.target_max_block_size = saved
        data_logger.setLevel(saved_level)


def _embtune_cause(exc: BaseException) -> EmbtuneError | None:
    """The user error (bad shard, wrong model) inside Ray's wrappers, if that is what went wrong."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, EmbtuneError):
            return current
        stack.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
    return None


# -- building the collection from parts ----------------------------------------------------------


def _part_batches(parts: list[Path], rows: int = PART_ROW_GROUP) -> Callable[[], Iterator[ItemBatch]]:
    def batches() -> Iterator[ItemBatch]:
        import pyarrow.parquet as pq

        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=rows, columns=["id", "text", "metadata",
                                                                                      "vector"]):
                vectors = batch.column("vector")
                dimension = vectors.type.list_size
                yield (batch.column("id").to_pylist(),
                       vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, dimension),
                       batch.column("text").to_pylist(),
                       [json.loads(m) for m in batch.column("metadata").to_pylist()])
    return batches


def index_with_ray(
    source: str | Path,
    *,
    collection: str,
    text_column: str | None,
    workspace: Workspace,
    db: Database,
    id_column: str | None = None,
    model: str = "default",
    index_kind: str = "auto",
    device: str = "cpu",
    fallback: bool = True,
    ray_address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    batch_rows: int = BATCH_ROWS,
    embedder: Any = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    show_progress: bool | None = None,
    ray_temp_dir: str | None = None,
    actor_class: type = EmbedActor,
    wait: bool = True,
    notice: Callable[[str], None] | None = None,
) -> IndexReport:
    """Embed a table or a folder of shards on Ray and store the result as a named collection.

    Produces what ``index_file`` produces for the same rows (same ids, texts, metadata; vectors equal to
    float rounding). ``workers`` embedding actors (default: one per CPU) run ``threads`` torch threads each
    (default: the CPUs each holds). ``actor_class`` replaces the embedding actor (tests use it to kill one).
    The collection's lock is held from the first part written to the commit (``wait``/``notice`` as in
    ``core.collection.named.index_file``).
    """
    started = time.perf_counter()
    check_collection_name(collection)
    if not text_column:
        raise DataError("--engine ray embeds a text column: give --text-column (images use the local engine)")
    shards = list_shards(source)
    for shard in shards:
        check_shard_columns(shard.path, [text_column] + ([id_column] if id_column else []))
    import_ray()  # before loading a model: a missing extra or an unreachable cluster is one line at once
    if ray_address or os.environ.get("RAY_ADDRESS"):
        check_reachable(ray_address or os.environ["RAY_ADDRESS"])
    if embedder is None:
        from core.embedders import load_embedder

        embedder = load_embedder(model, device=device, fallback=fallback, cache=False)
    if not hasattr(embedder, "encode") or getattr(embedder, "modality", "text") != "text":
        raise DataError(f"--engine ray embeds text, and {embedder.model_id} is not a text model")
    with collection_lock(workspace, collection, wait=wait, notice=notice):
        info, count = _embed_and_commit(source, shards, collection=collection, text_column=text_column,
                                        id_column=id_column, workspace=workspace, db=db, embedder=embedder,
                                        index_kind=index_kind, device=device, ray_address=ray_address,
                                        workers=workers, threads=threads, batch_rows=batch_rows, progress=progress,
                                        cancel=cancel, show_progress=show_progress, ray_temp_dir=ray_temp_dir,
                                        actor_class=actor_class)
    return IndexReport(collection=collection, count=count, dimension=embedder.dimension, model_id=embedder.model_id,
                       model_spec=embedder.spec, index_kind=index_kind, index_factory=info.index_factory,
                       path=str(workspace.collection_dir(collection)), seconds=time.perf_counter() - started)


def _embed_and_commit(source: str | Path, shards: list[Shard], *, collection: str, text_column: str,
                      id_column: str | None, workspace: Workspace, db: Database, embedder: Any, index_kind: str,
                      device: str, ray_address: str | None, workers: int | None, threads: int | None,
                      batch_rows: int, progress: ProgressCallback | None, cancel: CancelToken | None,
                      show_progress: bool | None, ray_temp_dir: str | None, actor_class: type) -> tuple[Any, int]:
    """Embed the shards whose part is not current, build the collection from the parts and commit it."""
    name_rows = Path(source).is_dir()
    folder = workspace.collection_dir(collection)
    parts_folder = folder / PARTS_FOLDER
    parts_folder.mkdir(parents=True, exist_ok=True)
    records = {s.index: _part_record(s, text_column=text_column, id_column=id_column, name_rows=name_rows,
                                     fingerprint=embedder.fingerprint) for s in shards}
    for stale in parts_folder.glob("part-*.parquet"):  # parts of shards that are no longer in the input
        if not stale.stem[5:].isdigit() or int(stale.stem[5:]) >= len(shards):
            stale.unlink()
    todo = [s for s in shards if not _part_is_current(_part_path(parts_folder, s), records[s.index])]
    if len(todo) < len(shards):
        logger.info("resuming: %d of %d shards are already embedded", len(shards) - len(todo), len(shards))
    bar = bool(show_progress) if show_progress is not None else False
    with ProgressReporter("embed shards", None, callback=progress, cancel=cancel, show_bar=bar,
                          unit="rows") as reporter:
        reporter.advance(0, f"{len(shards) - len(todo)} of {len(shards)} shards embedded")
        if todo:
            with ray_runtime(ray_address, temp_dir=ray_temp_dir) as runtime:
                _embed_shards(runtime, todo, parts_folder, records, text_column=text_column, id_column=id_column,
                              name_rows=name_rows, spec=embedder.spec, fingerprint=embedder.fingerprint,
                              device=device, workers=workers, threads=threads, batch_rows=batch_rows,
                              actor_class=actor_class,
                              reporter=reporter, total_shards=len(shards), show_progress=bar)
    if cancel is not None and cancel.cancelled:
        raise CancelledError("indexing was cancelled")
    parts = [_part_path(parts_folder, s) for s in shards]
    missing = [str(s.path) for s, part in zip(shards, parts, strict=True) if not part.exists()]
    if missing:  # Ray finished without returning every row of these shards: never build a partial index
        raise CollectionError(f"{len(missing)} shards came back incomplete (e.g. {missing[0]}): run the command "
                              "again to embed them")
    info, count = _build_from_parts(parts, shards, folder, embedder=embedder, index_kind=index_kind,
                                    progress=progress, cancel=cancel)
    commit_collection(db, name=collection, embedder=embedder, index_kind=index_kind, folder=folder,
                      generation=info.generation, source=source,
                      items=({"item_key": item_id, "text": text, "metadata_json": meta}
                             for ids, _, texts, metas in _part_batches(parts)()
                             for item_id, text, meta in zip(ids, texts, metas, strict=True)))
    return info, count


def _build_from_parts(parts: list[Path], shards: list[Shard], folder: Path, *, embedder: Any, index_kind: str,
                      progress: ProgressCallback | None, cancel: CancelToken | None) -> tuple[Any, int]:
    import pyarrow.parquet as pq

    sizes = np.array([pq.read_metadata(part).num_rows for part in parts], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def where(position: int) -> str:
        part = int(np.searchsorted(starts, position, side="right") - 1)
        return f"{shards[part].path}: row {position - starts[part] + 1}"

    info = save_streamed(folder, _part_batches(parts), count=int(starts[-1]), dimension=embedder.dimension,
                         index_kind=index_kind, model_id=embedder.model_id, model_fingerprint=embedder.fingerprint,
                         model_spec=embedder.spec, describe_position=where, progress=progress, cancel=cancel,
                         publish_now=False)
    return info, int(starts[-1])
