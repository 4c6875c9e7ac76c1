"""Training launched in its own process (the studio's Train page): done, cancelled, killed, refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from core.errors import EmbtuneError
from core.training import launcher
from core.training.config import TrainingConfig
from storage.db import Database, RunStore
from storage.workspace import Workspace

PAIRS = [(f"query about {topic} {n}", f"item on {topic} number {n}") for topic in
         ("chimney", "drill", "hose", "paint", "pipe", "garden") for n in range(4)]


@pytest.fixture()
def setting(tmp_path: Path) -> tuple[Workspace, Database, Path]:
    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.default_db_url)
    data = tmp_path / "pairs.csv"
    data.write_text("anchor,positive\n" + "".join(f"{a},{p}\n" for a, p in PAIRS), encoding="utf-8")
    return workspace, db, data


def _config(workspace: Workspace, data: Path, model: Path, name: str, **extra: object) -> TrainingConfig:
    return TrainingConfig(data=str(data), output_dir=str(workspace.models_dir / name), model=str(model),
                          run_name=name, batch_size=4, forgetting_check=False, **extra)


def _wait(db: Database, name: str, states: tuple[str, ...], timeout: float = 240.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = next(r for r in launcher.refresh_runs(db) if r.name == name)
        if run.status in states:
            return run
        time.sleep(0.5)
    log = Path(RunStore(db).process(name).log_path).read_text(encoding="utf-8", errors="replace")
    raise AssertionError(f"run {name} stayed {run.status}; log:\n{log[-3000:]}")


def test_a_launched_run_trains_in_its_own_process_and_records_progress(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "r1"), db=db, workspace=workspace)
    process = RunStore(db).process(name)
    assert process.pid != os.getpid() and Path(process.log_path).is_file()
    run = _wait(db, name, ("done", "failed"))
    assert run.status == "done", run.error
    assert (workspace.models_dir / "r1" / "embtune_run.json").is_file()
    assert run.progress["history"] and run.progress["step"] == run.progress["total_steps"] > 0
    assert run.before_after["table"]


def test_cancel_stops_a_running_run(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "long", epochs=500), db=db,
                                    workspace=workspace)
    _wait(db, name, ("running",))
    launcher.cancel_training(name, db)
    run = _wait(db, name, ("cancelled", "failed", "done"))
    assert run.status == "cancelled"
    with pytest.raises(EmbtuneError, match="only queued or running"):
        launcher.cancel_training(name, db)


def test_a_killed_training_process_shows_as_failed_with_the_reason(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "doomed", epochs=500), db=db,
                                    workspace=workspace)
    _wait(db, name, ("running",))
    os.kill(RunStore(db).process(name).pid, signal.SIGKILL)
    run = _wait(db, name, ("failed",), timeout=30)
    assert "ended without finishing" in run.error and str(RunStore(db).process(name).pid) in run.error


def test_too_few_pairs_are_refused_before_any_process_starts(setting, tiny_model_dir: Path, tmp_path: Path) -> None:
    workspace, db, _ = setting
    small = tmp_path / "small.csv"
    small.write_text("anchor,positive\na,b\nc,d\n", encoding="utf-8")
    with pytest.raises(EmbtuneError, match="only 2 usable rows"):
        launcher.launch_training(_config(workspace, small, tiny_model_dir, "small"), db=db, workspace=workspace)
    assert RunStore(db).list() == []


def test_a_loss_that_does_not_fit_the_data_is_refused(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    with pytest.raises(EmbtuneError, match="loss 'cosent' does not fit pairs data"):
        launcher.launch_training(_config(workspace, data, tiny_model_dir, "bad", loss="cosent"), db=db,
                                 workspace=workspace)
    assert RunStore(db).list() == []


def test_a_run_name_cannot_be_launched_twice(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    RunStore(db).queue("taken", collection_name=None, config={})
    with pytest.raises(EmbtuneError, match="already exists"):
        launcher.launch_training(_config(workspace, data, tiny_model_dir, "taken"), db=db, workspace=workspace)


def test_a_dead_queued_run_without_process_fails_after_the_timeout(setting) -> None:
    _, db, _ = setting
    RunStore(db).queue("ghost", collection_name=None, config={})
    [run] = launcher.refresh_runs(db, now=time.time() + launcher.QUEUED_TIMEOUT_S + 5)
    assert run.status == "failed" and "never started" in run.error
