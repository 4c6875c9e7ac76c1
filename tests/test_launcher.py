"""Training launched in its own process (the studio's Train page): gated, cancelled, killed, refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from core.errors import EmbtuneError
from core.training import launcher
from core.training.config import TrainingConfig
from core.training.runs import QUEUED_TIMEOUT_S, refresh_runs, run_duration_s, state_label
from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace
from tests.conftest import COMPLETED

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
        run = next(r for r in refresh_runs(db) if r.name == name)
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
    run = _wait(db, name, (*COMPLETED, "failed"))
    assert run.status in COMPLETED, run.error
    assert run.before_after["gate"]["status"] == run.status
    assert (workspace.models_dir / "r1" / "embtune_run.json").is_file()
    assert run.progress["history"] and run.progress["step"] == run.progress["total_steps"] > 0
    assert run.before_after["table"]


def test_a_standby_worker_takes_the_next_launch_and_a_new_one_waits_for_the_one_after(
        setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    launcher.prepare_worker(db=db, workspace=workspace)
    standby = launcher._standbys[(db.url, str(workspace.root), launcher.sys.executable)]
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "warm"), db=db, workspace=workspace)
    assert RunStore(db).process(name).pid == standby.process.pid  # the prepared process runs it
    assert (db.url, str(workspace.root), launcher.sys.executable) not in launcher._standbys
    run = _wait(db, name, (*COMPLETED, "failed"))
    launcher.prepare_worker(db=db, workspace=workspace)  # the page's next run prepares the next one
    replacement = launcher._standbys[(db.url, str(workspace.root), launcher.sys.executable)]
    assert replacement.process.pid != standby.process.pid and replacement.alive()
    assert run.status in COMPLETED, run.error
    assert "warm: " in Path(RunStore(db).process(name).log_path).read_text(encoding="utf-8")  # its log is the run's
    replacement.process.stdin.close()  # what the studio's exit does: the waiting standby leaves quietly
    assert replacement.process.wait(timeout=120) == 0


def test_cancel_stops_a_running_run(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "long", epochs=500), db=db,
                                    workspace=workspace)
    _wait(db, name, ("running",))
    launcher.cancel_training(name, db)
    asked = RunStore(db).get(name)  # at once, before the worker has noticed: the run says it is stopping
    assert asked.status == "cancelling" and state_label(asked).startswith("cancelling…")
    run = _wait(db, name, ("cancelled", "failed", *COMPLETED))
    assert run.status == "cancelled" and state_label(run) == f"cancelled at step {run.progress['step']}"
    # a studio-launched run has its start on the record: its duration is the time it ran, not 0
    assert run.started_at is not None and run.finished_at is not None
    assert run_duration_s(run) == pytest.approx((run.finished_at - run.started_at).total_seconds()) and \
        run_duration_s(run) > 0
    with pytest.raises(EmbtuneError, match="only queued or running"):
        launcher.cancel_training(name, db)


def test_a_killed_training_process_shows_as_interrupted_at_its_step(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "doomed", epochs=500), db=db,
                                    workspace=workspace)
    _wait_for_step(db, name, 2)
    os.kill(RunStore(db).process(name).pid, signal.SIGKILL)
    run = _wait(db, name, ("interrupted", "failed"), timeout=30)
    assert run.status == "interrupted" and run.progress["step"] >= 2
    assert state_label(run) == f"interrupted at step {run.progress['step']}"
    assert "ended without finishing" in run.error and str(RunStore(db).process(name).pid) in run.error


def test_sigterm_ends_a_run_cancelled_with_a_checkpoint(setting, tiny_model_dir: Path) -> None:
    workspace, db, data = setting
    name = launcher.launch_training(_config(workspace, data, tiny_model_dir, "terminated", epochs=500), db=db,
                                    workspace=workspace)
    _wait_for_step(db, name, 2)
    os.kill(RunStore(db).process(name).pid, signal.SIGTERM)
    run = _wait(db, name, ("cancelled", "interrupted", "failed"), timeout=60)
    assert run.status == "cancelled", run.error
    checkpoints = list((workspace.models_dir / ".terminated.checkpoints").glob("checkpoint-*"))
    assert max(int(c.name.rsplit("-", 1)[1]) for c in checkpoints) == run.progress["step"] >= 2


def _wait_for_step(db: Database, name: str, step: int, timeout: float = 240.0) -> None:
    """Until the run reports ``step`` (the heartbeat writes it), or it ended (then the test fails)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = RunStore(db).get(name)
        if run.status not in ("queued", "running"):
            raise AssertionError(f"run {name} ended {run.status} before step {step}: {run.error}")
        if int((run.progress or {}).get("step") or 0) >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {name} never reached step {step}")


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
    [run] = refresh_runs(db, now=time.time() + QUEUED_TIMEOUT_S + 5)
    assert run.status == "failed" and "never started" in run.error
