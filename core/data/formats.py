"""Reading user tables (CSV, JSONL, Parquet) with errors that name the file and the line.

Everything is read as text (CSV ids like ``007`` stay ``007``) and empty cells stay empty
strings, so validation, not the reader, decides what is missing. Rows are numbered from 1
over data rows, the header excluded, which is what a spreadsheet user sees.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from core.errors import DataError

SUPPORTED_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def read_json_file(path: str | Path, *, expect_object: bool = True) -> Any:
    """A JSON (or, by suffix, YAML) file, with one clear error for a missing or malformed file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a JSON file")
    text = _read_utf8(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            payload = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if expect_object and not isinstance(payload, dict):
        raise DataError(f"{path}: expected an object of settings, got {type(payload).__name__}")
    return payload


def table_format(path: Path, explicit: str | None = None) -> str:
    if explicit:
        return explicit.lower()
    kind = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        suffix = path.suffix or "(none)"
        raise DataError(f"{path}: unsupported file type {suffix!r}: use .csv, .tsv, .jsonl or .parquet")
    return kind


def read_table(path: str | Path, *, file_format: str | None = None) -> pd.DataFrame:
    """Load a table as strings; one clear ``DataError`` for anything a user can get wrong."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a .csv, .jsonl or .parquet file")
    kind = table_format(path, file_format)
    if kind == "parquet":
        return _read_parquet(path)
    text = _read_utf8(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    frame = _read_jsonl(path, text) if kind == "jsonl" else _read_delimited(path, text, "\t" if kind == "tsv" else ",")
    if frame.empty:
        raise DataError(f"{path}: has a header but no data rows")
    return frame


def _read_utf8(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:  # unreadable (permissions), a folder, a device that fails
        raise DataError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, text: str, separator: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1].replace("Error tokenizing data. C error: ", "")
        raise DataError(f"{path}: malformed CSV: {detail}") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame


def read_jsonl_records(path: str | Path, text: str | None = None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; a bad line is one ``DataError``
    naming the file and line, so every JSONL reader in embtune reports the same way."""
    path = Path(path)
    if text is None:
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        text = _read_utf8(path)
    records = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {line_number} is not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {line_number} is a JSON {type(record).__name__}, expected an object")
        records.append((line_number, record))
    return records


def _read_jsonl(path: Path, text: str) -> pd.DataFrame:
    records = [{key: _cell_text(value) for key, value in record.items()}
               for _, record in read_jsonl_records(path, text)]
    return pd.DataFrame.from_records(records).fillna("")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:160]})") from None
    if frame.empty:
        raise DataError(f"{path}: has no data rows")
    return frame.apply(lambda column: column.map(_cell_text)).fillna("")


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# -- training data ------------------------------------------------------------------------------

# The column layout each format is normalised to (the order sentence-transformers' losses read).
TRAINING_COLUMNS = {
    "triplets": ("anchor", "positive", "negative"),
    "pairs": ("anchor", "positive"),
    "scored": ("sentence1", "sentence2", "score"),
    "classes": ("text", "label"),
}
# Names users give those columns, mapped to ours.
COLUMN_ALIASES = {
    "query": "anchor", "question": "anchor", "sentence1": "anchor",
    "item": "positive", "document": "positive", "passage": "positive", "answer": "positive", "sentence2": "positive",
    "hard_negative": "negative", "class": "label",
}


def normalise_training_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename known aliases (query → anchor, answer → positive, …) without clobbering real columns."""
    renames = {c: COLUMN_ALIASES[c] for c in frame.columns if c in COLUMN_ALIASES and COLUMN_ALIASES[c] not in frame}
    return frame.rename(columns=renames)


def detect_training_format(frame: pd.DataFrame, source: str | Path = "data") -> str:
    """pairs / triplets / scored / classes, from the (normalised) columns present."""
    columns = set(frame.columns)
    if {"anchor", "positive", "negative"} <= columns:
        return "triplets"
    if {"anchor", "positive", "score"} <= columns:
        return "scored"
    if {"anchor", "positive"} <= columns:
        return "pairs"
    if {"text", "label"} <= columns:
        return "classes"
    raise DataError(
        f"{source}: cannot tell the data format from columns {', '.join(map(str, frame.columns))}: expected "
        "anchor+positive (pairs), +negative (triplets), +score (scored pairs) or text+label (classes); "
        "query/question/sentence1 and item/answer/sentence2 are accepted too"
    )
