"""A collection on disk: one folder whose ``manifest.json`` names one *generation* of files
(``index-N.faiss``, ``vectors-N.npy``, ``items-N.jsonl``) with their sizes and CRC32s.

A save writes generation N+1 file by file (each atomically), then *stages* it: ``manifest-N+1.json``
names the new files with their checksums, while ``manifest.json`` still names generation N and readers
see N. *Publishing* replaces ``manifest.json`` by the staged one — the single commit point — then
removes the other generations; *discarding* removes the staged files. A crash at any moment leaves the
folder's manifest pointing at complete files. A named collection publishes only after its database row
names the staged generation (``core.collection.catalogue``), so a staged generation whose files verify
is one a crash stopped between the two, and is rolled forward. Metadata is JSON; nothing is pickled.
The vectors the collection stores are checked here too (finite, L2-normalised float32 rows), since
every way in writes them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from core.errors import CollectionError, DimensionMismatchError
from core.progress import ProgressCallback, ProgressReporter
from storage.workspace import DISK_FULL_BYTES, atomic_path, atomic_write_json, require_free_space, write_error

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# A loaded collection whose vectors file is larger than this maps it (copy-on-write) instead of reading it.
MMAP_VECTORS_MIN_BYTES = 1 << 30
_GENERATION_FILE = re.compile(r"^(index|vectors|items|manifest)-(\d+)\.(faiss|npy|jsonl|json)$")
# Per item, beyond the vectors: an HNSW graph's links (M=32: 64 neighbours of 4 bytes at level 0) and the
# JSON keys of an items line.
INDEX_LINK_BYTES = 300
ITEM_OVERHEAD_BYTES = 60
_ERRNO_BY_REASON = {os.strerror(code): code for code in errno.errorcode}


@dataclass
class CollectionInfo:
    """What the manifest records about a collection (and ``stats()`` reports)."""

    dimension: int
    index_kind: str = "auto"
    index_factory: str = "Flat"
    model_id: str | None = None
    model_fingerprint: str | None = None
    model_spec: str | None = None
    generation: int = 0
    search_params: dict[str, int] = field(default_factory=dict)


@dataclass
class StoredCollection:
    """A generation read back and verified: its info, vectors (maybe memory-mapped), items and index."""

    info: CollectionInfo
    vectors: np.ndarray
    items: list[dict[str, Any]]
    index: faiss.Index | None


def checked_vectors(vectors: np.ndarray, expected_rows: int, dimension: int, model_id: str | None) -> np.ndarray:
    """Vectors as contiguous float32 rows of ``dimension``, finite and L2-normalised."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.shape[1] != dimension:
        raise DimensionMismatchError(
            f"vectors have dimension {vectors.shape[1]} but the collection was built with "
            f"{dimension} ({model_id or 'unknown model'})"
        )
    if vectors.shape[0] != expected_rows:
        raise CollectionError(f"got {expected_rows} ids but {vectors.shape[0]} vectors")
    if not np.isfinite(vectors).all():
        raise CollectionError("vectors contain NaN or infinity")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def json_safe(value: Any) -> Any:
    """Metadata must round-trip through JSON: numpy scalars → Python, NaN → None."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def generation_files(folder: Path, at_least: int = 0) -> tuple[int, dict[str, str]]:
    """The next generation's number (above the folder's, any staged or left-over one, and ``at_least``) and
    its file names by role."""
    previous = read_manifest(folder)["generation"] if (folder / MANIFEST).exists() else 0
    present = [int(match.group(2)) for file in folder.iterdir() if (match := _GENERATION_FILE.match(file.name))] \
        if folder.is_dir() else []
    generation = max(at_least, previous, *present) + 1
    return generation, {"index": f"index-{generation}.faiss", "vectors": f"vectors-{generation}.npy",
                        "items": f"items-{generation}.jsonl"}


def write_items(handle: IO[str], ids: Sequence[str], texts: Iterable[str | None],
                metadata: Iterable[Mapping[str, Any]]) -> None:
    for item_id, text, meta in zip(ids, texts, metadata, strict=True):
        handle.write(json.dumps({"id": item_id, "text": text, "metadata": meta}, ensure_ascii=False))
        handle.write("\n")


def write_index(index: faiss.Index, target: Path) -> None:
    """``faiss.write_index`` atomically; its C++ write error comes back as the ``OSError`` it was (faiss does not
    always name the cause: a write cut short on a disk with no room left is a full disk)."""
    with atomic_path(target) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:
            found = re.search(r"\(([^()]+)\)\s*$", str(exc))
            reason = found.group(1) if found and found.group(1) in _ERRNO_BY_REASON else None
            if reason is None and shutil.disk_usage(target.parent).free < DISK_FULL_BYTES:
                reason = os.strerror(errno.ENOSPC)
            raise OSError(_ERRNO_BY_REASON.get(reason or "", errno.EIO), reason or str(exc).strip().splitlines()[-1],
                          str(target)) from exc


def estimated_bytes(count: int, dimension: int, text_chars: int | None = None) -> int:
    """About what a generation of ``count`` items takes on disk: the vectors, an index of their size plus graph
    links (HNSW's are the largest), and the items as JSON lines (200 characters each when not known)."""
    vectors = count * dimension * 4
    return 2 * vectors + count * (INDEX_LINK_BYTES + ITEM_OVERHEAD_BYTES) + \
        (text_chars if text_chars is not None else 200 * count)


def save_generation(folder: Path, info: CollectionInfo, *, index: faiss.Index | None, vectors: np.ndarray,
                    ids: Sequence[str], texts: Sequence[str | None], metadata: Sequence[Mapping[str, Any]],
                    progress: ProgressCallback | None = None) -> CollectionInfo:
    """Write and stage the next generation of ``folder`` (free space checked first); its info is returned.

    Any failure, a full disk included, removes what was written of it (and the folder, when it was made now); an
    ``OSError`` becomes one ``StorageError`` naming the file and the cause.
    """
    require_free_space(folder, estimated_bytes(len(ids), info.dimension, sum(len(text or "") for text in texts)),
                       what=f"collection {folder.name}")
    created = not folder.exists()
    generation, names = generation_files(folder, at_least=info.generation)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with ProgressReporter("save collection", 3, callback=progress) as reporter:
            if index is not None:
                write_index(index, folder / names["index"])
            else:
                del names["index"]
            reporter.advance(1)
            with atomic_path(folder / names["vectors"]) as tmp, open(tmp, "wb") as handle:
                np.save(handle, vectors, allow_pickle=False)
            reporter.advance(1)
            with atomic_path(folder / names["items"]) as tmp, open(tmp, "w", encoding="utf-8") as handle:
                write_items(handle, ids, texts, metadata)
            staged = replace(info, generation=generation)
            stage(folder, names, staged, len(ids))
            reporter.advance(1)
    except BaseException as exc:
        discard(folder, generation)
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        if isinstance(exc, OSError):
            raise write_error(exc, f"collection {folder}") from None
        raise
    return staged


def staged_manifest(folder: Path, generation: int) -> Path:
    return folder / f"manifest-{generation}.json"


def stage(folder: Path, names: Mapping[str, str], info: CollectionInfo, count: int) -> None:
    """Record generation ``info.generation`` (its files all written) in its own manifest; readers still see
    the folder's current generation until ``publish``."""
    files = {role: {"name": name, **_file_check(folder / name)} for role, name in names.items()}
    atomic_write_json(staged_manifest(folder, info.generation),
                      {"format_version": FORMAT_VERSION, "count": count, "files": files, **asdict(info)})


def publish(folder: Path, generation: int) -> None:
    """Make the staged ``generation`` the folder's (its files verified first), then drop the others."""
    staged = staged_manifest(folder, generation)
    _verified(folder, read_manifest(folder, staged.name))
    os.replace(staged, folder / MANIFEST)
    for file in folder.iterdir():
        match = _GENERATION_FILE.match(file.name)
        if (match and int(match.group(2)) != generation) or (file.name.startswith(".") and file.name.endswith(".tmp")):
            file.unlink(missing_ok=True)


def discard(folder: Path, generation: int) -> None:
    """Remove a staged (or half-written) generation; the folder's current one is untouched."""
    if not folder.is_dir():
        return
    for file in folder.iterdir():
        match = _GENERATION_FILE.match(file.name)
        if match and int(match.group(2)) == generation:
            file.unlink(missing_ok=True)


def commit(folder: Path, names: Mapping[str, str], info: CollectionInfo, count: int) -> None:
    """Stage and publish generation ``info.generation`` at once (a folder no database row describes)."""
    stage(folder, names, info, count)
    publish(folder, info.generation)


def staged_generation(folder: str | Path, generation: int) -> bool:
    """Whether ``generation`` is staged in ``folder`` with every file complete (size and checksum)."""
    folder = Path(folder)
    try:
        _verified(folder, read_manifest(folder, staged_manifest(folder, generation).name))
    except CollectionError:
        return False
    return True


def read_manifest(folder: str | Path, name: str = MANIFEST) -> dict[str, Any]:
    """A saved collection's manifest (what loading checks first), without loading the collection."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollectionError(f"collection manifest {folder / name} is unreadable: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CollectionError(f"collection {folder} has format {manifest.get('format_version')!r}, "
                              f"this embtune reads {FORMAT_VERSION}")
    return manifest


def read_generation(folder: Path, generation: int | None = None) -> StoredCollection:
    """The manifest's generation (or the staged ``generation``), every file verified against its size and
    checksum."""
    if generation is not None and staged_manifest(folder, generation).exists():
        manifest = read_manifest(folder, staged_manifest(folder, generation).name)
    elif not (folder / MANIFEST).exists():
        raise CollectionError(f"{folder} holds no collection (no {MANIFEST})")
    else:
        manifest = read_manifest(folder)
    info = CollectionInfo(**{key: manifest[key] for key in CollectionInfo.__dataclass_fields__ if key in manifest})
    _verified(folder, manifest)
    vectors_file = folder / manifest["files"]["vectors"]["name"]
    # A large collection maps its vectors (copy-on-write: changes stay in memory until saved as a new
    # generation), so opening one costs its index and items, not its vectors; re-ranking reads a few rows.
    big = vectors_file.stat().st_size > MMAP_VECTORS_MIN_BYTES
    vectors = np.load(vectors_file, allow_pickle=False, mmap_mode="c" if big else None)
    with open(folder / manifest["files"]["items"]["name"], encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle if line.strip()]
    if len(items) != len(vectors) or (len(vectors) and vectors.shape[1] != info.dimension):
        raise CollectionError(f"collection {folder} is inconsistent: {len(items)} items, {vectors.shape} vectors")
    index = None
    if "index" in manifest["files"]:
        try:
            index = faiss.read_index(str(folder / manifest["files"]["index"]["name"]))
        except RuntimeError as exc:
            raise CollectionError(f"collection index in {folder} cannot be read: {exc}") from exc
    return StoredCollection(info, vectors, items, index)


def _verified(folder: Path, manifest: Mapping[str, Any]) -> None:
    for role, entry in manifest["files"].items():
        file = folder / entry["name"]
        if not file.exists():
            raise CollectionError(f"collection file {file} is missing ({role})")
        if _file_check(file) != {"size": entry["size"], "crc32": entry["crc32"]}:
            raise CollectionError(f"collection file {file} is corrupted (size/checksum differ from its manifest)")


def _file_check(path: Path) -> dict[str, int]:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return {"size": path.stat().st_size, "crc32": crc}
