"""The cost a run shows before Launch: its step count as the trainer will count it, and seconds per step for
this model on this machine (earlier runs, else a probe of real steps, kept so it runs once)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.training import cost
from core.training.train import train
from storage.db import Database
from storage.runs import RunStore
from tests.test_heldout import pairs_file, tiny_config


@pytest.mark.parametrize("overrides", [{}, {"similarity_anchor": 1000.0, "augment_typos": 1, "epochs": 2}],
                         ids=["plain", "anchor-and-typos"])
def test_the_planned_steps_are_the_steps_the_trainer_takes(tmp_path: Path, tiny_model_dir: Path, overrides) -> None:
    db = Database(f"sqlite:///{tmp_path / 'embtune.db'}")
    config = tiny_config(tmp_path, tiny_model_dir, pairs_file(tmp_path, 60), **overrides)
    plan = cost.plan_steps(config, db=db)
    assert plan.steps > 0 and (plan.anchor_rows > 0) == bool(overrides)
    train(config, db=db, show_progress=False)
    run = RunStore(db).get(config.run_name)
    assert run.progress["total_steps"] == plan.steps  # the trainer's own max_steps


def test_speed_comes_from_the_newest_run_of_the_same_model_scaled_to_the_batch(tmp_path: Path,
                                                                              tiny_model_dir: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'embtune.db'}")
    runs = RunStore(db)
    for name, model, steps, seconds in (("old", str(tiny_model_dir), 10, 100.0), ("other", "minilm", 10, 7.0),
                                        ("new", str(tiny_model_dir), 10, 50.0),
                                        ("barely-started", str(tiny_model_dir), 1, 16.0)):  # one warm-up step
        runs.queue(name, collection_name=None, config={"model": model, "batch_size": 8})
        runs.start(name, takeover=True)  # the queued row, as the worker takes it over
        runs.update(name, status="finished", progress={"step": steps, "elapsed_s": seconds})
    config = tiny_config(tmp_path, tiny_model_dir, pairs_file(tmp_path, 10), batch_size=16)
    estimate = cost.speed_from_runs(config, runs.list())
    assert estimate.seconds_per_step == pytest.approx(50.0 / 10 * 16 / 8) and "run new" in estimate.source
    assert estimate.overhead_s is not None and estimate.overhead_s >= 0
    assert cost.speed_from_runs(tiny_config(tmp_path, tmp_path, pairs_file(tmp_path, 10)), runs.list()) is None


def test_a_probe_times_real_steps_once_and_answers_from_its_file_after(tmp_path: Path, tiny_model_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config(tmp_path, tiny_model_dir, pairs_file(tmp_path, 40))
    kept = tmp_path / "speed.json"
    first = cost.probe_speed(config, cache_file=kept)
    assert first.seconds_per_step > 0 and "probe of 4 steps" in first.source and kept.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the probe ran again")

    monkeypatch.setattr(cost, "_time_steps", no_training)
    assert cost.probe_speed(config, cache_file=kept).seconds_per_step == pytest.approx(first.seconds_per_step)
    # twice the batch: twice the texts a step reads, from the same measurement
    assert cost.probe_speed(config.replace(batch_size=16), cache_file=kept).seconds_per_step == \
        pytest.approx(2 * first.seconds_per_step)
    with pytest.raises(AssertionError, match="ran again"):  # another model is another question
        cost.probe_speed(config.replace(model="minilm"), cache_file=kept)
