"""Run state a user can trust: a killed `embtune train` shows interrupted at its step, --resume continues
from its last complete checkpoint and says so, and a run the gate rejects is never served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.training.runs import run_summary, servable_spec
from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace
from tests.conftest import COMPLETED, write_csv

WORDS = ["chimney", "drill", "hose", "paint", "pipe", "garden", "ladder", "brush"]


def pairs(folder: Path) -> Path:
    return write_csv(folder / "pairs.csv", [["anchor", "positive"]] + [
        [f"{WORDS[i % 8]} {i}", f"{WORDS[i % 8]} {WORDS[(i * 3 + 1) % 8]} item {i}"] for i in range(48)])


def complete_checkpoints(folder: Path) -> list[int]:
    return sorted(int(c.name.rsplit("-", 1)[1]) for c in folder.glob("checkpoint-*")
                  if (c / "trainer_state.json").is_file())


def test_kill_9_shows_interrupted_and_resume_continues_from_the_last_checkpoint(
        run_cli, workspace_dir: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "model"
    common = ["--data", str(pairs(tmp_path)), "--output-dir", str(out), "--model", str(tiny_model_dir),
              "--batch-size", "4", "--device", "cpu", "--no-forgetting-check", "--checkpoint-minutes", "0.002"]
    env = {**os.environ, "EMBTUNE_HOME": str(workspace_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "embtune", "train", *common, "--epochs", "500",
                                "--run-name", "k9"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    db = Database(Workspace.open(workspace_dir).db_url())
    checkpoints = out.parent / f".{out.name}.checkpoints"
    deadline = time.monotonic() + 240
    try:
        while True:  # until the run has recorded steps and written a complete checkpoint
            assert process.poll() is None, process.stdout.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "no step and checkpoint within 240 s"
            run = RunStore(db).get("k9")
            if run is not None and (run.progress or {}).get("step", 0) >= 3 and complete_checkpoints(checkpoints):
                break
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)

    listed = run_cli("runs", "--json")
    [row] = [r for r in json.loads(listed.out) if r["name"] == "k9"]
    assert row["status"] == "interrupted" and row["state"] == f"interrupted at step {row['step']}"
    assert row["step"] >= 3 and row["duration_s"] > 0
    assert f"interrupted at step {row['step']}" in run_cli("runs").out
    last = complete_checkpoints(checkpoints)[-1]

    resumed = run_cli("train", *common, "--resume", "--max-steps", str(last + 3))  # no --run-name: found by folder
    assert resumed.code in (0, 3), resumed.err
    assert f"resuming from checkpoint-{last} (step {last})" in resumed.err
    run = RunStore(db).get("k9")
    assert run.status in COMPLETED and run.progress["step"] == last + 3
    assert len(RunStore(db).list()) == 1  # the resumed run kept its row
    assert (out / "embtune_run.json").is_file()


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(run_cli, tmp_path: Path,
                                                                tiny_model_dir: Path) -> None:
    result = run_cli("train", "--data", str(pairs(tmp_path)), "--output-dir", str(tmp_path / "fresh"), "--model",
                     str(tiny_model_dir), "--max-steps", "2", "--batch-size", "4", "--device", "cpu",
                     "--no-forgetting-check", "--resume", "--accept-worse")
    assert result.code == 0, result.err
    assert "no checkpoint in" in result.err and "starting from step 0" in result.err


def test_a_destructive_learning_rate_is_rejected_and_never_served(run_cli, workspace_dir: Path) -> None:
    result = run_cli("train", "--data", "bundled:catalogue", "--output-dir", str(workspace_dir / "bad"),
                     "--model", "minilm", "--lr", "0.05", "--max-steps", "6", "--batch-size", "16",
                     "--collection", "catalogue", "--run-name", "bad-lr", "--no-forgetting-check", "--device", "cpu")
    assert result.code == 3, result.err
    assert "gate: rejected" in result.out and "is worse on" in result.out
    db = Database(Workspace.open(workspace_dir).db_url())
    run = RunStore(db).get("bad-lr")
    summary = run_summary(run)
    assert summary["status"] == "rejected" and summary["verdict"] == "worse" and summary["delta"] < 0
    assert servable_spec("catalogue", db) is None  # the demos' model B
    latest = run_cli("eval", "--data", "bundled:catalogue", "--model", "run:latest")
    assert latest.code == 1 and "run:latest: no finished training run" in latest.err
    assert "rejected: " in run_cli("runs", "show", "bad-lr").out
