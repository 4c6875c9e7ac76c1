"""Reading and validating user tables: every mistake is one line naming file, row, field."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.data.formats import read_table
from core.data.validate import validate_items
from core.errors import DataError, EmbtuneError
from tests.conftest import write_csv


def test_csv_jsonl_and_parquet_read_the_same_table(tmp_path: Path) -> None:
    rows = [["id", "name", "price"], ["007", "Труба 115 мм", "10.5"], ["8", "Chimney cap", ""]]
    csv_frame = read_table(write_csv(tmp_path / "items.csv", rows))
    (tmp_path / "items.jsonl").write_text(
        "\n".join(json.dumps(dict(zip(rows[0], row, strict=True)), ensure_ascii=False) for row in rows[1:]),
        encoding="utf-8")
    jsonl_frame = read_table(tmp_path / "items.jsonl")
    csv_frame.to_parquet(tmp_path / "items.parquet")
    parquet_frame = read_table(tmp_path / "items.parquet")
    for frame in (csv_frame, jsonl_frame, parquet_frame):
        assert frame["id"].tolist() == ["007", "8"]  # ids stay text
        assert frame["name"].tolist() == ["Труба 115 мм", "Chimney cap"]
        assert frame["price"].tolist() == ["10.5", ""]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        read_table(tmp_path / "nope.csv")


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'"):
        read_table(tmp_path / "data.xlsx")


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "cp1251.csv").write_bytes("id,name\n1,ok\n2,Труба\n".encode("cp1251"))
    with pytest.raises(DataError, match=r"cp1251\.csv: line 3 is not valid UTF-8"):
        read_table(tmp_path / "cp1251.csv")


def test_malformed_csv_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("id,name\n1,a\n2,b,extra,fields\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv: malformed CSV: Expected 2 fields in line 3, saw 4"):
        read_table(tmp_path / "bad.csv")


def test_bad_jsonl_line(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{"id": 2,\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        read_table(tmp_path / "bad.jsonl")


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="file is empty"):
        read_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("id,name\n", encoding="utf-8")
    with pytest.raises(DataError, match="header but no data rows"):
        read_table(tmp_path / "header.csv")


def test_broken_parquet(tmp_path: Path) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        read_table(tmp_path / "broken.parquet")


def frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_unknown_column_lists_the_available_ones() -> None:
    with pytest.raises(DataError, match=r"f\.csv: no column 'title' \(columns are: id, name\)"):
        validate_items(frame([{"id": "1", "name": "a"}]), text_column="title", id_column="id", source="f.csv")


def test_empty_text_cell_names_row_and_id() -> None:
    rows = [{"id": "1", "name": "a"}, {"id": "2", "name": "  "}]
    with pytest.raises(DataError, match=r"f\.csv: row 2 \(id '2'\): column 'name' is empty"):
        validate_items(frame(rows), text_column="name", id_column="id", source="f.csv")


def test_duplicate_ids_name_both_rows() -> None:
    rows = [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}, {"id": "1", "name": "c"}]
    with pytest.raises(DataError, match=r"f\.csv: id '1' appears in rows 1, 3"):
        validate_items(frame(rows), text_column="name", id_column="id", source="f.csv")


def test_a_rejected_upload_is_removed_and_its_message_names_the_users_file(tmp_path) -> None:
    from core.data.importing import keep_upload, table_columns

    uploads = tmp_path / "uploads"
    with pytest.raises(EmbtuneError) as caught:
        keep_upload("catalogue.parquet", b"this is not parquet at all", folder=uploads, check=table_columns)
    message = str(caught.value)
    assert "catalogue.parquet" in message and str(uploads) not in message
    assert not any(uploads.iterdir())  # the bad file is not kept
    kept = keep_upload("ok.csv", b"id,text\n1,chimney\n", folder=uploads, check=table_columns)
    assert kept.parent == uploads and kept.read_bytes() == b"id,text\n1,chimney\n"
