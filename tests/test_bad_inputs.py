"""A user's mistakes, one command each: every one is answered by exactly one ``error:`` line naming the file,
row, field or name at fault, with a non-zero exit and no traceback (the CLI catches only embtune's own
errors, so an unexpected exception fails here as a traceback, not as a line).

The battery grew from a session's sweep of ~70 bad inputs over every command; the ones other test files
already cover (index/search/collections, ports, output folders, index kinds) are not repeated here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

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
}

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
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in
                                                          enumerate(CASES)])
def test_a_bad_input_is_one_error_line(run_cli, tmp_path: Path, args: list[str], message: str) -> None:
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    line = one_error_line(run_cli(*[arg.format(d=tmp_path) for arg in args]))
    assert message in line
    assert not (tmp_path / "o").exists()  # nothing half-made where a model would go
