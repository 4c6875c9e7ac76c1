"""Nothing measured later leaks training data: a run keeps its split's queries and its test split, its own
test split reproduces the gate's figures, an evaluation on queries a run trained on says so (and can leave them
out), and the studio's loss chart draws the loss only where the trainer logged it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.evaluation import load_retrieval_set, run_evaluation
from core.progress import CancelToken
from core.training.config import TrainingConfig
from core.training.train import train
from storage.db import Database
from storage.runs import RunStore
from tests.conftest import COMPLETED, write_csv
from webapp.charts import chart_rows, training_chart

WORDS = ["chimney", "pipe", "drill", "garden", "hose", "paint", "труба", "дымоход"]


def pairs_file(folder: Path, n: int) -> Path:
    rows = [["query_id", "anchor", "positive"]]
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(i * 3 + 1) % len(WORDS)]
        rows.append([f"Q{i}", f"{a} {i}", f"{a} {b} item {i}"])
    return write_csv(folder / "pairs.csv", rows)


def tiny_config(folder: Path, model: Path, data: Path, **overrides) -> TrainingConfig:
    values = {"data": str(data), "output_dir": str(folder / "out"), "model": str(model), "epochs": 1,
              "batch_size": 8, "learning_rate": 1e-3, "max_seq_length": 32, "forgetting_check": False,
              "device": "cpu", "augment_typos": 0, "matryoshka_dims": [], "similarity_anchor": 0, "run_name": "r1"}
    return TrainingConfig(**(values | overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Database, Path, Path]:
    folder = tmp_path_factory.mktemp("heldout")
    db = Database(f"sqlite:///{folder / 'embtune.db'}")
    data = pairs_file(folder, 40)
    result = train(tiny_config(folder, tiny_model_dir, data), db=db, show_progress=False)
    assert result.status in COMPLETED
    return db, data, folder


def test_a_run_keeps_the_queries_of_each_split_and_writes_its_test_split(trained) -> None:
    db, data, _ = trained
    run = RunStore(db).get("r1")
    splits = run.splits
    texts = {name: set(splits[name]["texts"]) for name in ("train", "validation", "test")}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    assert not (texts["validation"] & texts["test"])
    every_query = set(pd.read_csv(data)["anchor"])
    assert texts["train"] | texts["validation"] | texts["test"] == every_query
    by_id = pd.read_csv(data).set_index("query_id")["anchor"]
    assert set(by_id[splits["test"]["ids"]]) == texts["test"]  # ids and texts name the same queries
    written = load_retrieval_set(splits["test_set"])
    assert set(written.queries.values()) == texts["test"]


def test_a_runs_own_test_split_reproduces_the_gates_figures(trained, tiny_model_dir: Path) -> None:
    db, _, _ = trained
    run = RunStore(db).get("r1")
    gate = run.before_after["gate"]
    dimension = int(gate["metric"].split("_")[1])
    report = run_evaluation("run:r1", [str(tiny_model_dir), "run:r1"], dimensions=[dimension], db=db)
    [comparison] = [c for c in next(iter(report.comparisons.values()))
                    if c.metric == "ndcg@10" and c.dimension == dimension]
    assert report.queries == gate["queries"]
    assert round(comparison.mean_a, 4) == round(gate["before"], 4)
    assert round(comparison.mean_b, 4) == round(gate["after"], 4)
    assert report.overlaps == []  # its own test split holds none of its training queries


def test_an_evaluation_on_training_queries_says_how_many_and_can_leave_them_out(trained, tiny_model_dir: Path) -> None:
    db, data, _ = trained
    run = RunStore(db).get("r1")
    test_queries = set(run.splits["test"]["texts"])
    every_query = set(pd.read_csv(data)["anchor"])
    seen = len(every_query - test_queries)
    pairs = data.parent / "eval-pairs.csv"
    frame = pd.read_csv(data).rename(columns={"anchor": "query", "positive": "item"}).assign(score=1.0)
    frame["query"] = frame["query"].str.upper()  # the same queries typed differently are still the same queries
    frame.drop(columns=["query_id"]).to_csv(pairs, index=False)

    report = run_evaluation(pairs, [str(tiny_model_dir), "run:r1"], db=db)
    assert report.overlaps == [{"model": "run:r1", "run": "r1", "queries": seen, "excluded": False}]
    assert report.warnings == [f"{seen} of {len(every_query)} queries are ones run:r1 trained on (run r1's "
                               "training and validation splits): on them it measures memory, not search; "
                               "--exclude-training-queries leaves them out"]
    base_only = run_evaluation(pairs, [str(tiny_model_dir)], db=db)
    assert base_only.overlaps == []  # the base model never saw them

    kept = run_evaluation(pairs, [str(tiny_model_dir), "run:r1"], db=db, exclude_training_queries=True)
    assert kept.queries == len(test_queries) and kept.overlaps[0]["excluded"]


def test_the_loss_chart_has_one_point_per_logged_loss(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A cancelled run keeps its checkpoint, whose trainer_state.json is the trainer's own log: the chart's loss
    points must be exactly its logged losses (steps and values), not one point per step."""
    db = Database(f"sqlite:///{tmp_path / 'embtune.db'}")
    cancel = CancelToken()
    stop_at = 12

    def progress(snapshot) -> None:
        if snapshot.step >= stop_at:
            cancel.cancel()

    config = tiny_config(tmp_path, tiny_model_dir, pairs_file(tmp_path, 120), epochs=50, run_name="long")
    result = train(config, db=db, progress=progress, cancel=cancel, show_progress=False)
    assert result.status == "cancelled"
    checkpoint = max((tmp_path / ".out.checkpoints").glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
    logged = [(entry["step"], entry["loss"]) for entry in
              json.loads((checkpoint / "trainer_state.json").read_text())["log_history"] if "loss" in entry]
    assert len(logged) >= 3 and logged[1][0] - logged[0][0] > 1  # logged every few steps, not every step
    run = RunStore(db).get("long")
    chart = training_chart(run.progress, run.epoch_metrics)
    points = chart_rows(chart, "training loss")
    assert [(p["step"], pytest.approx(p["loss"], abs=1e-6)) for p in points] == logged
