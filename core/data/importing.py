"""Bringing a table in from a UI: keep the upload, check it, and show what would be written.

The studio's import is two steps — look, then confirm — so nothing reaches a collection
until the user has seen the rows and every row problem. An upload is kept in the workspace
under a content-addressed name (re-uploading the same file does not pile up copies), and is
refused before being kept when it is not CSV/JSONL/Parquet, is empty, or is over the limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.data.formats import SUPPORTED_SUFFIXES, read_table
from core.data.validate import item_problems
from core.errors import DataError, EmbtuneError

DEFAULT_UPLOAD_LIMIT_MB = 200
PREVIEW_ROWS = 20


@dataclass
class ImportPreview:
    """A table as it would be imported: size, columns, first rows and every row problem."""

    path: str
    rows: int
    columns: list[str]
    head: pd.DataFrame
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def save_upload(name: str, data: bytes, *, folder: str | Path, limit_mb: float = DEFAULT_UPLOAD_LIMIT_MB,
                suffixes: Iterable[str] = SUPPORTED_SUFFIXES, kind: str = "a CSV, JSONL or Parquet file") -> Path:
    """Keep an uploaded file in ``folder`` (atomically) after checking its type (``suffixes``, described
    as ``kind`` in the error), emptiness and size."""
    from storage.workspace import atomic_write_bytes

    suffix = Path(name).suffix.lower()
    allowed = sorted(suffixes)
    if suffix not in allowed:
        raise DataError(f"{name}: not {kind} (allowed endings: {', '.join(allowed)})")
    if not data or not data.strip():
        raise DataError(f"{name}: the file is empty")
    if len(data) > limit_mb * 1024 * 1024:
        raise DataError(f"{name}: {len(data) / 1024 / 1024:.1f} MB is over the upload limit of {limit_mb:g} MB")
    digest = hashlib.sha256(data).hexdigest()[:16]
    target = Path(folder) / f"{Path(name).stem}-{digest}{suffix}"
    if not target.exists():
        atomic_write_bytes(target, data)
    return target


def keep_upload(name: str, data: bytes, *, folder: str | Path, check: Callable[[Path], Any],
                limit_mb: float = DEFAULT_UPLOAD_LIMIT_MB, suffixes: Iterable[str] = SUPPORTED_SUFFIXES,
                kind: str = "a CSV, JSONL or Parquet file") -> Path:
    """``save_upload``, then ``check`` the kept file (read its columns, open the image); a file that fails
    is removed again, and the message names the user's file, never the workspace path it was kept at."""
    path = save_upload(name, data, folder=folder, limit_mb=limit_mb, suffixes=suffixes, kind=kind)
    try:
        check(path)
    except EmbtuneError as exc:
        path.unlink(missing_ok=True)
        exc.args = (str(exc).replace(str(path), name).replace(path.name, name), *exc.args[1:])
        raise exc from None
    return path


def preview_table(path: str | Path, *, text_column: str | None, id_column: str | None = None,
                  image_column: str | None = None) -> ImportPreview:
    """Read and check a table for indexing without writing anything."""
    frame = read_table(path)
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
    column = image_column or text_column
    problems = item_problems(frame, text_column=column, id_column=id_column, source=Path(path).name) if column \
        else [{"row": 0, "field": "text column", "message": "choose the column to embed"}]
    return ImportPreview(str(path), len(frame), [str(c) for c in frame.columns], frame.head(PREVIEW_ROWS), problems)


def table_columns(path: str | Path) -> list[str]:
    """The columns of a table, to offer in a picker before the user chooses which to embed."""
    frame = read_table(path)
    if frame.empty:
        raise DataError(f"{path}: the table has no rows")
    return [str(c) for c in frame.columns]
