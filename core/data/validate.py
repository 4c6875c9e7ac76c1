"""Validation of tables before anything is written: every problem names file, row and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
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
    """Items to index: text present in every row, ids present and unique (the first problem is raised)."""
    problems = item_problems(frame, text_column=text_column, id_column=id_column, source=source)
    if problems:
        raise DataError(problems[0]["message"])


def item_problems(
    frame: pd.DataFrame,
    *,
    text_column: str,
    id_column: str | None,
    source: str | Path,
) -> list[dict[str, object]]:
    """Every problem of an items table (row 1-based, field, message), for a page to show as a table
    before anything is written; a missing column is one problem at row 0."""
    try:
        require_columns(frame, [text_column] + ([id_column] if id_column else []), source)
    except DataError as exc:
        return [{"row": 0, "field": text_column if text_column not in frame.columns else id_column,
                 "message": str(exc)}]
    problems: list[dict[str, object]] = []
    texts = frame[text_column].fillna("").astype(str).str.strip()
    empty = texts.eq("")
    for row in empty.to_numpy().nonzero()[0]:
        problems.append({"row": int(row) + 1, "field": text_column,
                         "message": f"{source}: row {row + 1}{_id_note(frame, id_column, int(row))}: "
                                    f"column {text_column!r} is empty ({int(empty.sum())} empty in all)"})
    if id_column:
        ids = frame[id_column].fillna("").astype(str).str.strip()
        for row in ids.eq("").to_numpy().nonzero()[0]:
            problems.append({"row": int(row) + 1, "field": id_column,
                             "message": f"{source}: row {row + 1}: column {id_column!r} (the id) is empty"})
        duplicated = ids.duplicated(keep=False) & ids.ne("")
        for value in dict.fromkeys(ids[duplicated]):
            rows = [int(i) + 1 for i in ids.index[ids.eq(value)].tolist()]
            problems.append({"row": rows[0], "field": id_column,
                             "message": f"{source}: id {value!r} appears in rows {', '.join(map(str, rows[:5]))} "
                                        f"(column {id_column!r}); ids must be unique"})
    return sorted(problems, key=lambda p: int(p["row"]))


def _id_note(frame: pd.DataFrame, id_column: str | None, row: int) -> str:
    if id_column and id_column in frame.columns:
        return f" (id {frame[id_column].iloc[row]!r})"
    return ""


@dataclass
class DataReport:
    """What validation found: counts a user can check, warnings, and rows dropped."""

    source: str
    data_format: str
    rows: int
    dropped_duplicates: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


MIN_TRAINING_ROWS = 8
SCORE_BUCKETS = ((0.0, 0.25, "0–0.25"), (0.25, 0.5, "0.25–0.5"), (0.5, 0.75, "0.5–0.75"), (0.75, 1.01, "0.75–1"))


def validate_training_frame(frame: pd.DataFrame, data_format: str, *, source: str | Path,
                            min_rows: int = MIN_TRAINING_ROWS) -> tuple[pd.DataFrame, DataReport]:
    """Check texts and scores row by row, drop exact duplicates (with a warning), report counts."""
    text_columns = {"pairs": ["anchor", "positive"], "triplets": ["anchor", "positive", "negative"],
                    "scored": ["anchor", "positive"], "classes": ["text"]}[data_format]
    require_columns(frame, text_columns + (["score"] if data_format == "scored" else []) +
                    (["label"] if data_format == "classes" else []), source)
    for column in text_columns:
        empty = frame[column].astype(str).str.strip().eq("")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0]) + 1
            raise DataError(f"{source}: row {row}: column {column!r} is empty ({int(empty.sum())} empty in all)")
    if data_format == "scored":
        scores = pd.to_numeric(frame["score"], errors="coerce")
        bad = scores.isna() | (scores < 0) | (scores > 1)
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(f"{source}: row {row + 1}: score {frame['score'].iloc[row]!r} is not a number in 0..1")
        frame = frame.assign(score=scores.astype(float))
    report = DataReport(str(source), data_format, len(frame))
    duplicated = frame.duplicated(subset=[c for c in frame.columns if c in (*text_columns, "score", "label")])
    if duplicated.any():
        report.dropped_duplicates = int(duplicated.sum())
        first = int(duplicated.to_numpy().nonzero()[0][0]) + 1
        report.warnings.append(f"{report.dropped_duplicates} exact duplicate rows dropped (first: row {first})")
        frame = frame[~duplicated].reset_index(drop=True)
    report.rows = len(frame)
    if len(frame) < min_rows:
        raise DataError(f"{source}: only {len(frame)} usable rows; at least {min_rows} are needed to train")
    if data_format == "scored":
        for low, high, label in SCORE_BUCKETS:
            report.counts[f"score {label}"] = int(((frame["score"] >= low) & (frame["score"] < high)).sum())
    elif data_format == "classes":
        report.counts = {f"class {k}": int(v) for k, v in frame["label"].astype(str).value_counts().items()}
    else:
        report.counts = {data_format: len(frame), "distinct anchors": int(frame["anchor"].nunique())}
    populated = [v for v in report.counts.values() if v > 0]
    if data_format in ("scored", "classes") and len(populated) > 1 and max(populated) > 10 * min(populated):
        report.warnings.append(f"imbalanced: largest group {max(populated)} rows vs smallest {min(populated)}")
    return frame, report
