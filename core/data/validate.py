"""Validation of tables before anything is written: every problem names file, row and field."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.errors import DataError


def require_columns(frame: pd.DataFrame, columns: Sequence[str], source: str | Path) -> None:
    """Refuse a table that lacks a column the user named, listing the ones it has."""
    for column in columns:
        if column not in frame.columns:
            available = ", ".join(map(str, frame.columns)) or "(none)"
            raise DataError(f"{source}: no column {column!r} (columns are: {available})")


def validate_items(
    frame: pd.DataFrame,
    *,
    text_column: str,
    id_column: str | None,
    source: str | Path,
) -> None:
    """Items to index: text present in every row, ids present and unique."""
    require_columns(frame, [text_column] + ([id_column] if id_column else []), source)
    texts = frame[text_column].astype(str).str.strip()
    empty = texts.eq("")
    if empty.any():
        row = int(empty.to_numpy().nonzero()[0][0])
        raise DataError(f"{source}: row {row + 1}{_id_note(frame, id_column, row)}: "
                        f"column {text_column!r} is empty ({int(empty.sum())} empty in all)")
    if id_column:
        ids = frame[id_column].astype(str).str.strip()
        blank = ids.eq("")
        if blank.any():
            row = int(blank.to_numpy().nonzero()[0][0])
            raise DataError(f"{source}: row {row + 1}: column {id_column!r} (the id) is empty")
        duplicated = ids.duplicated(keep=False)
        if duplicated.any():
            value = ids[duplicated].iloc[0]
            rows = [int(i) + 1 for i in ids.index[ids.eq(value)].tolist()]
            raise DataError(f"{source}: id {value!r} appears in rows {', '.join(map(str, rows[:5]))} "
                            f"(column {id_column!r}); ids must be unique")


def _id_note(frame: pd.DataFrame, id_column: str | None, row: int) -> str:
    if id_column and id_column in frame.columns:
        return f" (id {frame[id_column].iloc[row]!r})"
    return ""
