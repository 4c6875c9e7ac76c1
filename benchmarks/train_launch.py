"""How long after Launch the Train page shows a moving step: cold worker against a standby worker.

The page shows the run's stored progress (it refreshes every 2 s); what it can show is the first
step the worker records. This launches the studio's default recipe on the bundled catalogue the way
the page does (``core.training.launcher.launch_training``), once with a freshly started worker process
and once handed to a standby worker prepared beforehand (the page prepares one when it opens), and
prints, per launch, the seconds until each phase and until step 1 is in the database. Each run is
cancelled after its first step and has ended (checkpoint written) before the next launch.

    .venv/bin/python benchmarks/train_launch.py [--model default] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_report, cpu_snapshot, machine_line

from core.collection.named import index_bundled_catalogue
from core.training import launcher
from core.training.config import TrainingConfig
from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace


def first_step_seconds(db: Database, workspace: Workspace, model: str, name: str, warm: bool) -> dict[str, float]:
    if warm:
        launcher.prepare_worker(db=db, workspace=workspace)
        standby = launcher._standbys[(db.url, str(workspace.root), sys.executable)]
        log = standby.log_path
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "standby ready" not in log.read_text(errors="replace"):
            time.sleep(0.2)  # a user fills in the form meanwhile; the benchmark waits for the imports
    config = TrainingConfig(data="bundled:catalogue", output_dir=str(workspace.models_dir / name), model=model,
                            run_name=name, collection="catalogue")
    started = time.monotonic()
    launcher.launch_training(config, db=db, workspace=workspace)
    seen: dict[str, float] = {"launch call": time.monotonic() - started}
    while time.monotonic() - started < 600:
        run = RunStore(db).get(name)
        progress = run.progress or {}
        if progress.get("phase") and progress["phase"] not in seen:
            seen[progress["phase"]] = time.monotonic() - started
        if (progress.get("step") or 0) >= 1:
            seen["step 1 stored"] = time.monotonic() - started
            break
        if run.status in ("failed", "rejected", "finished"):
            raise SystemExit(f"run {name} ended {run.status}: {run.error}")
        time.sleep(0.1)
    launcher.cancel_training(name, db)
    while RunStore(db).get(name).status in ("queued", "running"):  # its checkpoint is written before the next
        time.sleep(0.5)
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    # The runs' checkpoints are GBs: the scratch folder goes with the benchmark (left behind, they filled a disk).
    with tempfile.TemporaryDirectory(prefix="embtune-launch-") as scratch:
        measure(args, Workspace.open(Path(scratch) / "ws"))


def measure(args: argparse.Namespace, workspace: Workspace) -> None:
    db = Database(workspace.db_url())
    index_bundled_catalogue(workspace, db, model=args.model)  # the studio's first start did this already
    print(f"# {machine_line()}; model {args.model}; the studio's default recipe on bundled:catalogue")
    before = cpu_snapshot()
    results: dict[str, list[float]] = {"cold": [], "standby": []}
    for round_number in range(args.rounds):
        for mode in ("cold", "standby"):
            seen = first_step_seconds(db, workspace, args.model, f"{mode}-{round_number}", mode == "standby")
            results[mode].append(seen["step 1 stored"])
            print(f"{mode:8} round {round_number}: " + ", ".join(f"{k} {v:.1f} s" for k, v in seen.items()),
                  flush=True)
    cold, warm = statistics.median(results["cold"]), statistics.median(results["standby"])
    print(f"launch → step 1 in the database, median: cold worker {cold:.1f} s, standby worker {warm:.1f} s "
          f"({cold / warm:.2f}× sooner); the page shows it at its next refresh (≤ 2 s later)")
    print(cpu_report(before))


if __name__ == "__main__":
    main()
