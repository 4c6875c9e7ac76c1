"""A user's mistakes, one command each: every one is answered by exactly one ``error:`` line naming the file,
row, field or name at fault, with a non-zero exit and no traceback (the CLI catches only embtune's own
errors, so an unexpected exception fails here as a traceback, not as a line).

The battery grew from sweeps of bad inputs over every command (~70, then 223 with permissions, configs, signals
and a full disk); the ones other test files already cover (index/search/collections, ports, output folders, index
kinds, concurrent writers and a locked database: tests/test_collection_faults.py) are not repeated here. A failed
``train`` also leaves no run behind.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import write_csv
from tests.test_cli import one_error_line

FILES = {
    "wrong_columns.csv": "a,b\n1,2\n",
    "empty.csv": "",
    "empty_cell.csv": "anchor,positive\nq,\n",
    "bad_score.csv": "query,item,score\nq,a,abc\n",
    "score_out_of_range.csv": "query,item,score\nq,a,7\n",
    "unknown_key.json": '{"data": "x.csv", "output_dir": "o", "lr": 5}',
    "broken.json": "{not json",
    "bench_unknown_key.json": '{"base_model": "/nope", "prompts": "x.jsonl"}',
    "empty_label.csv": "text,label\na,\n",
    "pairs.csv": "query,item,score\nq,a,1\n",
    "epochs_as_text.json": '{"data": "missing.csv", "output_dir": "o", "epochs": "1"}',
    "lora_as_text.json": '{"data": "missing.csv", "output_dir": "o", "lora": "no"}',
}
# Somewhere no process may create a file, for root as for anyone (a read-only folder does not stop root).
UNWRITABLE = "/proc"

CASES = [
    (["train", "--data", "{d}/missing.csv", "--output-dir", "{d}/o"], "missing.csv: file not found"),
    (["train", "--data", "{d}/wrong_columns.csv", "--output-dir", "{d}/o"],
     "wrong_columns.csv: cannot tell the data format from columns a, b"),
    (["train", "--data", "{d}/empty.csv", "--output-dir", "{d}/o"], "empty.csv: file is empty"),
    (["train", "--data", "{d}/empty_cell.csv", "--output-dir", "{d}/o"],
     "empty_cell.csv: row 1: column 'positive' is empty"),
    (["train", "--data", "{d}/bad_score.csv", "--output-dir", "{d}/o"],
     "bad_score.csv: row 1: score 'abc' is not a number"),
    (["train", "--data", "{d}/score_out_of_range.csv", "--output-dir", "{d}/o"], "score_out_of_range.csv: row 1:"),
    (["train", "--data", "bundled:nope", "--output-dir", "{d}/o"], "bundled:nope"),
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--lr", "-1"], "learning_rate=-1.0"),
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--epochs", "0"], "epochs=0.0"),
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--matryoshka-dims", "abc"],
     "--matryoshka-dims 'abc' must be whole numbers"),
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--loss", "nope"], "loss='nope'"),
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--loss", "batch_hard_triplet"],
     "loss 'batch_hard_triplet' does not fit scored data"),
    (["train", "{d}/unknown_key.json"], "unknown key 'lr'"),
    (["train", "{d}/broken.json"], "broken.json: not valid JSON"),
    (["train", "{d}/missing.json"], "missing.json: file not found"),
    (["runs", "show", "nope"], "no training run named 'nope'"),
    (["export", "run:nope", "--format", "onnx"], "no training run named 'nope'"),
    (["adapters", "merge", "nope", "--out", "{d}/merged"], "no training run named 'nope'"),
    (["negatives", "review", "nope"], "no training run named 'nope'"),
    (["llm", "bench", "{d}/missing.json"], "missing.json: file not found"),
    (["llm", "bench", "{d}/broken.json"], "broken.json: not valid JSON"),
    (["llm", "bench", "{d}/bench_unknown_key.json"], "unknown key 'base_model'"),
    (["compare-embedders", "--data", "{d}/empty_label.csv", "--model", "minilm", "--label-column", "label",
      "--text-column", "text"], "empty_label.csv: row 1: column 'label' is empty"),
    (["compare-embedders", "--data", "{d}/empty_label.csv", "--model", "minilm", "--label-column", "kind",
      "--text-column", "text"], "empty_label.csv: no column 'kind'"),
    (["eval", "--data", "{d}/pairs.csv", "--model", "{d}/no-model"], "no-model does not exist"),
    (["map", "nope", "--out", "{d}/map.png"], "collection 'nope' does not exist"),
    (["match", "nope", "{d}/missing.png"], "collection 'nope' does not exist"),
    (["confirm", "nope", "text", "w1"], "collection 'nope' does not exist"),
    # a config file is read strictly, and its field errors come before anything it names is looked at
    (["train", "{d}/epochs_as_text.json"],
     "training config: epochs='1' is not allowed: Input should be a valid number"),
    (["train", "{d}/lora_as_text.json"], "training config: lora='no' is not allowed: Input should be a valid boolean"),
    (["train", "{d}"], "is a folder, expected a JSON file"),
    # places that cannot be written are refused before the work whose result would go there
    (["train", "--data", "bundled:catalogue", "--output-dir", UNWRITABLE + "/model"],
     f"--output-dir {UNWRITABLE}/model: cannot write in {UNWRITABLE}"),
    (["eval", "--data", "{d}/pairs.csv", "--model", "{d}/no-model", "--json", "{d}/pairs.csv/report.json"],
     "pairs.csv/report.json: {d}/pairs.csv is a file, not a folder"),
    (["map", "nope", "--out", "{d}/pairs.csv/map.png"], "--out {d}/pairs.csv/map.png: {d}/pairs.csv is a file"),
    (["map", "nope", "--out", UNWRITABLE + "/map.png"], f"--out {UNWRITABLE}/map.png: cannot write in {UNWRITABLE}"),
    (["--db", "sqlite:///{d}/pairs.csv/embtune.db", "collections"],
     "database {d}/pairs.csv/embtune.db: {d}/pairs.csv is a file, not a folder"),
    (["search", "nope", "caf\udce9"], "the query is not valid UTF-8 text (byte 0xe9 at character 4)"),
    # counts where 0 or a negative number means nothing
    (["index", "{d}/pairs.csv", "--collection", "x", "--text-column", "query", "--workers", "-3"],
     "--workers -3 is not allowed: give a whole number of at least 1"),
    (["embed", "text", "--repeat", "-1"], "--repeat -1 is not allowed"),
    (["eval", "--data", "{d}/pairs.csv", "--model", "minilm", "--regressions", "-1"],
     "--regressions -1 is not allowed: give a whole number of at least 0"),
    (["llm", "train-lora", "--out", "{d}/adapter", "--epochs", "-1"], "--epochs -1.0 is not allowed"),
    # a run that cannot start leaves no run row (checked for every train case below)
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--model", "run:nope"],
     "run:nope: no training run named 'nope'"),
    (["train", "--data", "bundled:catalogue", "--output-dir", "{d}/o", "--test-data", "{d}/missing-test"],
     "missing-test: file not found"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in
                                                          enumerate(CASES)])
def test_a_bad_input_is_one_error_line(run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    line = one_error_line(run_cli(*[arg.format(d=tmp_path) for arg in args]))
    assert message.format(d=tmp_path) in line
    assert not (tmp_path / "o").exists()  # nothing half-made where a model would go
    if "train" in args:
        assert json.loads(run_cli("runs", "--json").out) == []  # a mistake writes no run


def test_an_unreadable_data_file_is_one_line(run_cli, tmp_path: Path, monkeypatch) -> None:
    """Permission bits do not stop root: as root the file's read fails as it would for another user."""
    data = write_csv(tmp_path / "items.csv", [["name"], ["paint"]])
    data.chmod(0)
    if os.geteuid() == 0:
        real = Path.read_bytes

        def denied(path: Path) -> bytes:
            if path == data:
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)

        monkeypatch.setattr(Path, "read_bytes", denied)
    line = one_error_line(run_cli("index", str(data), "--collection", "x", "--text-column", "name"))
    assert line == f"error: {data}: cannot be read: Permission denied"


# -- runs: names, base models, signals ----------------------------------------------------------------


def pairs_csv(folder: Path) -> Path:
    words = ["chimney", "pipe", "drill", "garden", "hose", "paint"]
    return write_csv(folder / "pairs.csv", [["anchor", "positive"]] + [
        [f"{words[i % 6]} {i}", f"{words[i % 6]} {words[(i + 1) % 6]} item {i}"] for i in range(24)])


@pytest.fixture()
def t1(workspace_dir: Path, tiny_model_dir: Path):
    """A finished run ``t1`` whose model is the 32-d tiny model."""
    from storage.db import Database
    from storage.runs import RunStore
    from storage.workspace import Workspace

    runs = RunStore(Database(Workspace.open(workspace_dir).db_url()))
    runs.start("t1", collection_name=None, config={}, model_path=str(tiny_model_dir))
    runs.update("t1", status="finished", before_after={"table": "t1's own"})
    return runs


def test_run_name_as_a_base_model_is_that_runs_model_and_a_mistake_writes_no_run(run_cli, t1, tmp_path: Path,
                                                                                  tiny_model_dir: Path) -> None:
    """``run:t1`` is read as t1's folder (the tiny model's 32 dimensions are what refuses 64); the refusal leaves
    t1 alone and adds no run."""
    line = one_error_line(run_cli("train", "--data", str(pairs_csv(tmp_path)), "--output-dir", str(tmp_path / "o"),
                                  "--model", "run:t1", "--matryoshka-dims", "64,32", "--device", "cpu"))
    assert line == "error: matryoshka_dims [64] are larger than the model's dimension 32"
    assert [run.name for run in t1.list()] == ["t1"] and t1.get("t1").model_path == str(tiny_model_dir)


def test_an_existing_run_name_is_refused_unless_overwrite(run_cli, t1, tmp_path: Path, tiny_model_dir: Path) -> None:
    common = ["--data", str(pairs_csv(tmp_path)), "--model", str(tiny_model_dir), "--run-name", "t1",
              "--batch-size", "4", "--max-steps", "2", "--no-forgetting-check", "--device", "cpu", "--accept-worse"]
    line = one_error_line(run_cli("train", *common, "--output-dir", str(tmp_path / "new")))
    assert line == (f"error: a training run named 't1' already exists (finished; model {tiny_model_dir}): choose "
                    "another --run-name, or --overwrite replaces it")
    assert t1.get("t1").model_path == str(tiny_model_dir) and not (tmp_path / "new").exists()

    replaced = run_cli("train", *common, "--output-dir", str(tmp_path / "new"), "--overwrite")
    assert replaced.code == 0, replaced.err
    run = t1.get("t1")
    assert run.model_path == str(tmp_path / "new") and run.before_after.get("table") != "t1's own"
    assert [r.name for r in t1.list()] == ["t1"]


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_train_records_cancelled_and_exits_non_zero(run_cli, workspace_dir: Path, tmp_path: Path,
                                                                   tiny_model_dir: Path, stop: int, code: int) -> None:
    """The signal comes once the run has recorded its first step (read from the database, as the studio does)."""
    from storage.db import Database
    from storage.runs import RunStore
    from storage.workspace import Workspace

    runs = RunStore(Database(Workspace.open(workspace_dir).db_url()))
    sent = threading.Event()

    def signal_after_the_first_step() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = runs.get("sig")
            if run is not None and (run.progress or {}).get("step", 0) >= 1:
                os.kill(os.getpid(), stop)
                sent.set()
                return
            time.sleep(0.05)

    sender = threading.Thread(target=signal_after_the_first_step, daemon=True)
    sender.start()
    result = run_cli("train", "--data", str(pairs_csv(tmp_path)), "--output-dir", str(tmp_path / "o"), "--model",
                     str(tiny_model_dir), "--run-name", "sig", "--epochs", "200", "--batch-size", "4",
                     "--no-forgetting-check", "--device", "cpu")
    sender.join(10)
    assert sent.is_set() and result.code == code, result.err
    [row] = json.loads(run_cli("runs", "--json").out)
    assert row["state"] == f"cancelled at step {row['step']}" and row["step"] >= 1
    assert f"cancelled at step {row['step']}" in result.out


def test_a_filter_on_a_field_no_item_has_warns_with_the_fields_there_are(run_cli, tmp_path: Path,
                                                                         tiny_model_dir: Path) -> None:
    items = write_csv(tmp_path / "items.csv", [["id", "name", "category"], ["P1", "paint", "paints"],
                                               ["P2", "drill", "tools"]])
    assert run_cli("index", str(items), "--collection", "shop", "--text-column", "name", "--id-column", "id",
                   "--model", str(tiny_model_dir)).code == 0
    typo = run_cli("search", "shop", "paint", "--filter", "colour=red")
    assert typo.code == 0 and typo.out.strip() == "no results"
    assert typo.err.strip() == "warning: filter field 'colour' is in no item of this collection (fields: category)"
    honest = run_cli("search", "shop", "paint", "--filter", "category=garden")  # a field there is: no warning
    assert honest.code == 0 and honest.out.strip() == "no results" and not honest.err.strip()
