"""A collection on disk: one folder whose ``manifest.json`` names one *generation* of files
(``index-N.faiss``, ``vectors-N.npy``, ``items-N.jsonl``) with their sizes and CRC32s.

A save writes generation N+1 file by file (each atomically), then replaces the manifest — the single
commit point — then removes generation N. A crash at any moment leaves the previous manifest pointing
at complete files. Metadata is JSON; nothing is pickled. The vectors the collection stores are checked
here too (finite, L2-normalised float32 rows), since every way in writes them.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import faiss
import numpy as np

from core.errors import CollectionError, DimensionMismatchError
from storage.workspace import atomic_write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# A loaded collection whose vectors file is larger than this maps it (copy-on-write) instead of reading it.
MMAP_VECTORS_MIN_BYTES = 1 << 30
_GENERATION_FILE = re.compile(r"^(index|vectors|items)-(\d+)\.(faiss|npy|jsonl)$")


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
    """The next generation's number (above the folder's and ``at_least``) and its file names by role."""
    previous = read_manifest(folder)["generation"] if (folder / MANIFEST).exists() else 0
    generation = max(at_least, previous) + 1
    return generation, {"index": f"index-{generation}.faiss", "vectors": f"vectors-{generation}.npy",
                        "items": f"items-{generation}.jsonl"}


def write_items(handle: IO[str], ids: Sequence[str], texts: Iterable[str | None],
                metadata: Iterable[Mapping[str, Any]]) -> None:
    for item_id, text, meta in zip(ids, texts, metadata, strict=True):
        handle.write(json.dumps({"id": item_id, "text": text, "metadata": meta}, ensure_ascii=False))
        handle.write("\n")


def commit(folder: Path, names: Mapping[str, str], info: CollectionInfo, count: int) -> None:
    """Point the manifest at generation ``info.generation`` (its files all written), then drop the others."""
    files = {role: {"name": name, **_file_check(folder / name)} for role, name in names.items()}
    atomic_write_json(folder / MANIFEST, {"format_version": FORMAT_VERSION, "count": count, "files": files,
                                          **asdict(info)})
    for file in folder.iterdir():
        match = _GENERATION_FILE.match(file.name)
        if (match and int(match.group(2)) != info.generation) or \
                (file.name.startswith(".") and file.name.endswith(".tmp")):
            file.unlink(missing_ok=True)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """A saved collection's manifest (what loading checks first), without loading the collection."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollectionError(f"collection manifest {folder / MANIFEST} is unreadable: {exc}") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CollectionError(f"collection {folder} has format {manifest.get('format_version')!r}, "
                              f"this embtune reads {FORMAT_VERSION}")
    return manifest


def read_generation(folder: Path) -> StoredCollection:
    """The manifest's generation, every file verified against its size and checksum."""
    if not (folder / MANIFEST).exists():
        raise CollectionError(f"{folder} holds no collection (no {MANIFEST})")
    manifest = read_manifest(folder)
    info = CollectionInfo(**{key: manifest[key] for key in CollectionInfo.__dataclass_fields__ if key in manifest})
    for role, entry in manifest["files"].items():
        file = folder / entry["name"]
        if not file.exists():
            raise CollectionError(f"collection file {file} is missing ({role})")
        if _file_check(file) != {"size": entry["size"], "crc32": entry["crc32"]}:
            raise CollectionError(f"collection file {file} is corrupted (size/checksum differ from {MANIFEST})")
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


def _file_check(path: Path) -> dict[str, int]:
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return {"size": path.stat().st_size, "crc32": crc}
