"""The CLI's contract forms, on a tiny model; every bad input is one line, exit ≠ 0, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_csv

ROWS = [["id", "name", "category"], ["P1", "chimney pipe", "chimneys"], ["P2", "garden hose", "garden"],
        ["P3", "paint", "paints"], ["P4", "drill", "tools"]]


@pytest.fixture()
def items_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "items.csv", ROWS)


@pytest.fixture()
def indexed(run_cli, items_csv: Path, tiny_model_dir: Path):
    result = run_cli("index", str(items_csv), "--collection", "shop", "--text-column", "name",
                     "--id-column", "id", "--model", str(tiny_model_dir))
    assert result.code == 0, result.err
    return result


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def one_error_line(result) -> str:
    assert result.code != 0
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    return lines[0]


def test_index_then_search_json(indexed, run_cli) -> None:
    assert "indexed 4 items into 'shop'" in indexed.out
    result = run_cli("search", "shop", "garden hose", "-k", "2", "--json")
    assert result.code == 0, result.err
    hits = json.loads(result.out)
    assert [set(hit) for hit in hits] == [{"id", "score", "text", "metadata"}] * 2
    assert hits[0]["id"] == "P2" and hits[0]["metadata"] == {"category": "garden"}
    assert hits[0]["text"] == "garden hose"  # the item's own text, as the file had it
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_search_text_output_and_filter(indexed, run_cli) -> None:
    result = run_cli("search", "shop", "paint", "-k", "3", "--filter", "category=tools")
    assert result.code == 0
    assert result.out.strip().splitlines()[0].split()[2] == "P4"
    assert len(result.out.strip().splitlines()) == 1


def test_collections_lists_size_model_dimension_kind(indexed, run_cli, tiny_model_dir: Path) -> None:
    rows = json.loads(run_cli("collections", "--json").out)
    assert rows[0]["name"] == "shop" and rows[0]["size"] == 4 and rows[0]["dimension"] == 32
    assert rows[0]["index_kind"] == "auto" and rows[0]["model"] == str(tiny_model_dir.resolve())
    assert "shop" in run_cli("collections").out


def test_embed_shows_model_dimension_norm_time_and_cache(run_cli, tiny_model_dir: Path) -> None:
    result = run_cli("embed", "a text only this test embeds", "--model", str(tiny_model_dir), "--repeat", "2")
    assert result.code == 0, result.err
    assert "dimension:  32" in result.out and "norm:       1.000000" in result.out
    assert "cache hit: no" in result.out and "cache hit: yes" in result.out


def test_reindexing_replaces_the_collection(indexed, run_cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    smaller = write_csv(tmp_path / "smaller.csv", ROWS[:3])
    assert run_cli("index", str(smaller), "--collection", "shop", "--text-column", "name", "--id-column", "id",
                   "--model", str(tiny_model_dir)).code == 0
    assert json.loads(run_cli("collections", "--json").out)[0]["size"] == 2
    assert [h["id"] for h in json.loads(run_cli("search", "shop", "paint", "-k", "5", "--json").out)] \
        in (["P1", "P2"], ["P2", "P1"])


@pytest.mark.parametrize(
    ("make_file", "args", "message"),
    [
        (lambda d: d / "missing.csv", [], "missing.csv: file not found"),
        (lambda d: write_csv(d / "f.csv", ROWS), ["--text-column", "title"], "no column 'title'"),
        (lambda d: write_csv(d / "f.csv", [*ROWS, ["P5", "", "x"]]), [], "row 5 (id 'P5'): column 'name' is empty"),
        (lambda d: write_csv(d / "f.csv", [*ROWS, ["P1", "again", "x"]]), [], "id 'P1' appears in rows 1, 5"),
        (lambda d: write_bytes(d / "f.csv", "id,name\nP1,Труба\n".encode("cp1251")), [],
         "line 2 is not valid UTF-8"),
    ],
    ids=["missing-file", "unknown-column", "empty-text", "duplicate-ids", "not-utf8"],
)
def test_bad_index_input_is_one_line_and_writes_nothing(run_cli, tmp_path: Path, workspace_dir: Path,
                                                        tiny_model_dir: Path, make_file, args, message) -> None:
    file = make_file(tmp_path)
    base = ["index", str(file), "--collection", "bad", "--text-column", "name", "--id-column", "id",
            "--model", str(tiny_model_dir)]
    if args:
        base[base.index("--text-column") + 1] = args[1]
    line = one_error_line(run_cli(*base))
    assert message in line
    assert not (workspace_dir / "collections" / "bad").exists()
    assert json.loads(run_cli("collections", "--json").out) == []


def test_missing_model_path_is_one_line(run_cli, items_csv: Path, tmp_path: Path) -> None:
    line = one_error_line(run_cli("index", str(items_csv), "--collection", "c", "--text-column", "name",
                                  "--model", str(tmp_path / "no-model")))
    assert "no-model does not exist" in line


def test_search_unknown_collection(run_cli) -> None:
    assert "collection 'nope' does not exist" in one_error_line(run_cli("search", "nope", "query"))


@pytest.mark.parametrize("k", ["0", "-2"])
def test_search_k_must_be_positive(indexed, run_cli, k: str) -> None:
    assert "k must be a positive whole number" in one_error_line(run_cli("search", "shop", "paint", "-k", k))


def test_corrupted_index_file_is_one_line(indexed, run_cli, workspace_dir: Path) -> None:
    index_file = next((workspace_dir / "collections" / "shop").glob("index-*.faiss"))
    index_file.write_bytes(index_file.read_bytes()[:-20])
    assert "is corrupted" in one_error_line(run_cli("search", "shop", "paint"))


def test_unreachable_database_is_one_line(run_cli) -> None:
    line = one_error_line(run_cli("--db", "postgresql+psycopg2://u:pw@127.0.0.1:1/none", "collections"))
    assert "cannot connect to database postgresql+psycopg2://u:***@127.0.0.1:1/none" in line


def test_collection_built_with_another_model_is_refused(indexed, run_cli, workspace_dir: Path,
                                                        tiny_model_dir_48: Path) -> None:
    from core.collection.named import open_collection
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open(workspace_dir)
    db = Database(workspace.db_url())
    from core.embedders import load_embedder
    from core.errors import DimensionMismatchError

    other = load_embedder(str(tiny_model_dir_48), device="cpu")
    with pytest.raises(DimensionMismatchError, match="re-index it"):
        open_collection("shop", workspace=workspace, db=db, embedder=other)
    rebuilt = open_collection("shop", workspace=workspace, db=db, embedder=other, rebuild=True)
    assert rebuilt.dimension == 48 and db.get_collection("shop").dimension == 48


def test_check_setup_prints_status_lines(run_cli, workspace_dir: Path) -> None:
    result = run_cli("check-setup", "--skip-model")
    assert result.code == 0, result.out
    for name in ("Python", "torch", "CUDA", "faiss-cpu", "sentence-transformers", "default model", "workspace",
                 "database"):
        assert any(line[2:].startswith(name) for line in result.out.splitlines()), name
    assert all(line[0] in "✓⚠✗" for line in result.out.splitlines())


def test_check_setup_without_tesseract_warns_and_still_passes(run_cli, workspace_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Only screenshot collections read text with tesseract: a machine without it is set up for everything else."""
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(workspace_dir / "no-tesseract-here"))
    result = run_cli("check-setup", "--skip-model")
    assert result.code == 0, result.out
    [line] = [line for line in result.out.splitlines() if line[2:].startswith("tesseract")]
    assert line.startswith("⚠ tesseract: not installed: optional, only screenshot collections")
    assert not [line for line in result.out.splitlines() if line.startswith("✗")]


def test_check_setup_fails_on_unreachable_database(run_cli) -> None:
    result = run_cli("--db", "postgresql+psycopg2://u@127.0.0.1:1/x", "check-setup", "--skip-model")
    assert result.code == 1
    assert any(line.startswith("✗ database") for line in result.out.splitlines())


@pytest.mark.parametrize(("kind", "message"), [
    ("HNSW_not_a_kind", "index kind 'HNSW_not_a_kind' is neither auto/flat/hnsw/ivf nor a faiss factory string "
                        "(nor hnsw_sq, ivfpq): could not parse HNSW code description not_a_kind"),
    ("IVF4096,Flat", "index kind 'IVF4096,Flat' trains 4096 IVF lists and the collection has"),  # faiss: after
    ("IVF2,PQ8", "index kind 'IVF2,PQ8' trains 256 PQ codes per sub-quantizer"),               # the embedding
])
def test_a_wrong_index_kind_is_refused_before_anything_is_embedded(run_cli, items_csv: Path, workspace_dir: Path,
                                                                    tiny_model_dir: Path, monkeypatch, kind: str,
                                                                    message: str) -> None:
    from core.embedders.text import TextEmbedder

    def embedding_started(*args, **kwargs):
        raise AssertionError("the items were embedded before the index kind was checked")

    monkeypatch.setattr(TextEmbedder, "encode_document", embedding_started)
    line = one_error_line(run_cli("index", str(items_csv), "--collection", "kinds", "--text-column", "name",
                                  "--model", str(tiny_model_dir), "--index-kind", kind))
    assert message in line and "faiss::" not in line  # faiss's words, not its C++ signature
    assert not (workspace_dir / "collections" / "kinds").exists()


@pytest.mark.parametrize(("option", "message"), [
    (["--device", "tpu"], "device 'tpu' is unknown: use auto, cpu, cuda, cuda:N or mps"),  # trained on the CPU before
    (["--max-steps", "0"], "0 steps: give a positive number"),  # the trainer read 0 as no limit: a whole run
])
def test_a_setting_that_cannot_mean_what_it_says_is_refused_before_a_run_is_recorded(
        run_cli, tiny_model_dir: Path, tmp_path: Path, option: list[str], message: str) -> None:
    line = one_error_line(run_cli("train", "--data", "bundled:catalogue", "--model", str(tiny_model_dir),
                                  "--output-dir", str(tmp_path / "out"), *option))
    assert message in line
    assert json.loads(run_cli("runs", "--json").out) == [] and not (tmp_path / "out").exists()


def test_an_output_dir_that_is_a_file_is_refused_before_training(run_cli, tmp_path: Path, workspace_dir: Path,
                                                                  tiny_model_dir: Path) -> None:
    pairs = write_csv(tmp_path / "pairs.csv", [["anchor", "positive"]] + [[f"q{i}", f"item {i}"] for i in range(20)])
    taken = tmp_path / "taken.txt"
    taken.write_text("my notes\n", encoding="utf-8")
    line = one_error_line(run_cli("train", "--data", str(pairs), "--output-dir", str(taken), "--model",
                                  str(tiny_model_dir)))
    assert f"--output-dir {taken} is an existing file" in line
    assert taken.read_text(encoding="utf-8") == "my notes\n"  # never lost
    assert json.loads(run_cli("runs", "--json").out) == []  # no run was recorded


@pytest.mark.parametrize("command", [["studio"], ["demo", "product"], ["demo", "screens"]])
def test_a_busy_port_is_one_line_before_any_work(run_cli, workspace_dir: Path, command: list[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(*command, "--port", str(port))
    line = one_error_line(result)
    assert line == f"error: port {port} on 127.0.0.1 is already in use: stop what listens there or choose " \
                   "another with --port"
    assert "http://" not in result.out  # no URL printed for a server that never started
    assert json.loads(run_cli("collections", "--json").out) == []  # nothing indexed first


def test_eval_says_how_many_queries_and_items_and_that_pairs_alone_shrink_the_corpus(
        run_cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    pairs = write_csv(tmp_path / "eval.csv", [["query", "item", "score"], ["flue", "chimney pipe", "1"],
                                              ["watering", "garden hose", "1"]])
    alone = run_cli("eval", "--data", str(pairs), "--model", str(tiny_model_dir))
    assert alone.code == 0, alone.err
    assert "evaluated 2 queries against 2 corpus items (only the items named in the pairs file" in alone.err
    catalogue = write_csv(tmp_path / "catalogue.csv", [["id", "text"], ["P1", "chimney pipe"], ["P2", "garden hose"],
                                                        ["P3", "paint"], ["P4", "drill"], ["P5", "ladder"]])
    full = run_cli("eval", "--data", str(pairs), "--model", str(tiny_model_dir), "--corpus", str(catalogue))
    assert full.code == 0, full.err
    # the pairs' item texts are the catalogue's items, not extra copies: 5 items, not 7
    assert "evaluated 2 queries against 5 corpus items (the corpus given with --corpus" in full.err


def test_progress_lines_say_n_of_total_with_eta_and_always_the_end() -> None:
    from core.progress import Progress, progress_lines

    lines: list[str] = []
    report = progress_lines(lines.append, interval_s=3600)
    report(Progress("encode", 10, 40, 2.0))
    report(Progress("encode", 20, 40, 4.0))  # within the interval: not written
    report(Progress("encode", 40, 40, 8.0))  # the end is always written
    assert lines == ["encode: 10/40 (25 %), ETA 6 s", "encode: 40/40 (100 %)"]


def test_index_and_embed_take_a_run_by_name_and_latest_never_means_a_rejected_one(
        run_cli, items_csv: Path, workspace_dir: Path, tiny_model_dir: Path, tiny_model_dir_48: Path) -> None:
    from storage.db import Database
    from storage.runs import RunStore
    from storage.workspace import Workspace

    runs = RunStore(Database(Workspace.open(workspace_dir).db_url()))
    for name, folder, status in (("kept", tiny_model_dir, "finished"), ("worse", tiny_model_dir_48, "rejected")):
        runs.start(name, collection_name=None, config={}, model_path=str(folder))
        runs.update(name, status=status)
    latest = run_cli("embed", "garden hose", "--model", "run:latest")
    assert latest.code == 0, latest.err
    assert f"model:      {tiny_model_dir}" in latest.out and "dimension:  32" in latest.out
    named = run_cli("embed", "garden hose", "--model", "run:worse")  # a rejected run, used because it is named
    assert named.code == 0 and "dimension:  48" in named.out
    indexed = run_cli("index", str(items_csv), "--collection", "tuned", "--text-column", "name", "--model",
                      "run:latest")
    assert indexed.code == 0, indexed.err
    [row] = json.loads(run_cli("collections", "--json").out)
    assert row["dimension"] == 32 and row["model"] == str(tiny_model_dir)
    runs.update("kept", status="rejected")
    assert "run:latest: no finished training run" in one_error_line(run_cli("embed", "x", "--model", "run:latest"))
