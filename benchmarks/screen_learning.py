"""The screenshot learning loop, measured: workflow accuracy on unseen screens before → after the auto fine-tune.

Why: ``LightweightFineTuner`` fine-tunes a ``screen:`` collection's text model on confirmed
screenshots (their OCR text ↔ the workflow's description and the OCR text of its indexed
screens). This shows what that does with real weights on the bundled set, on screens the
fine-tune never saw:

1. index the set's training variants with ``screen:default``;
2. match every unseen test variant: top-1 / top-3 by language and theme, plus the mean margin
   (score of the right workflow − the best wrong one; it moves even where top-1 is saturated);
3. confirm ``--per-group`` training variants per workflow and language through the fine-tuner
   (``trigger_threshold`` = their number, so it trains exactly once; no hold-out: the test
   variants are the evaluation) and wait for the background training, re-embedding and swap;
4. match the same test variants again.

The OCR readings come from the workspace's OCR cache (the one ``benchmarks/screen_set.py``
fills), and the script reports how many screens tesseract read during the fine-tune (0 expected).
The index, fine-tuned model and fine-tuner state live in a temporary workspace, removed at the end.

Run from the repository root::

    nice -n 19 .venv/bin/python benchmarks/screen_learning.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import cpu_report, cpu_snapshot, machine_line
from benchmarks.screen_set import GROUP_KEYS


def measure(tuner, rows: list[dict[str, str]], folder: Path) -> dict[str, tuple[float, float, float]]:
    """group → (top-1, top-3, mean margin) of ``tuner.match`` over the rows' screens."""
    groups: dict[str, list[tuple[bool, bool, float]]] = defaultdict(list)
    for row in rows:
        found = tuner.match(folder / row["image"], k=12, threshold=-1.0).matches
        ranked = [m.workflow_id for m in found]
        right = next((m.score for m in found if m.workflow_id == row["workflow_id"]), -1.0)
        wrong = max((m.score for m in found if m.workflow_id != row["workflow_id"]), default=-1.0)
        hit = (ranked[:1] == [row["workflow_id"]], row["workflow_id"] in ranked[:3], right - wrong)
        for key in ("all", f"lang={row['lang']}", f"theme={row['theme']}"):
            groups[key].append(hit)
    return {key: tuple(float(np.mean([h[i] for h in hits])) for i in range(3)) for key, hits in groups.items()}


def table_row(name: str, result: dict[str, tuple[float, float, float]]) -> str:
    cells = " | ".join(f"{result[k][0]:.3f} / {result[k][1]:.3f} / {result[k][2]:+.3f}" for k in GROUP_KEYS)
    return f"| {name} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "embtune-screen-bench"),
                        help="where the rendered set is cached (shared with benchmarks/screen_set.py)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=24)
    parser.add_argument("--per-group", type=int, default=2,
                        help="training variants confirmed per workflow and language (0: all training variants)")
    parser.add_argument("--references", type=int, default=8,
                        help="indexed screens of its workflow each confirmed screen is paired with")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    args = parser.parse_args()

    from core.collection.named import index_file
    from core.online import FineTunerConfig, LightweightFineTuner
    from core.screens import bundled_screens
    from storage.db import Database
    from storage.workspace import Workspace

    screens = bundled_screens(Workspace.open(args.workspace), seed=args.seed, variants=args.variants)
    train_rows, test_rows = screens.rows("train"), screens.rows("test")
    by_group: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in sorted(train_rows, key=lambda r: int(r["variant"])):
        by_group[(row["workflow_id"], row["lang"])].append(row)
    chosen = [row for rows in by_group.values() for row in (rows[: args.per_group] if args.per_group else rows)]
    # Interleave workflows, as a user's confirmations would come.
    chosen.sort(key=lambda r: (int(r["variant"]), r["workflow_id"]))

    print(f"## Screen learning loop: {len(test_rows)} unseen test screens, index = {len(train_rows)} training "
          f"variants, {len(chosen)} confirmations\n\n`{' '.join(['nice -n 19 .venv/bin/python', *sys.argv])}` — "
          f"{machine_line()}\n")
    scratch = Path(tempfile.mkdtemp(prefix="embtune-screen-learning-"))
    try:
        workspace = Workspace.open(scratch / "ws")
        db = Database(workspace.db_url())
        started = time.perf_counter()
        index_file(screens.write_split("train"), collection="screens", image_column="image", id_column="id",
                   model="screen:default", device="cpu", workspace=workspace, db=db, show_progress=False)
        config = FineTunerConfig(trigger_threshold=len(chosen), holdout_every=0, epochs=args.epochs,
                                 learning_rate=args.learning_rate, references_per_workflow=args.references,
                                 device="cpu")
        tuner = LightweightFineTuner("screens", workspace=workspace, db=db, config=config)
        print(f"indexed in {time.perf_counter() - started:.0f} s (OCR from the cache)")
        before = measure(tuner, test_rows, screens.folder)

        ocr = tuner.serving.embedder.ocr_cache
        misses = ocr.misses
        cpu = cpu_snapshot()
        for row in chosen:
            tuner.confirm(screens.folder / row["image"], row["workflow_id"])
        assert tuner.wait(3600), "the fine-tune did not finish within an hour"
        stats = tuner.stats()
        if stats.state != "idle" or stats.trainings_run != 1:
            raise SystemExit(f"the fine-tune did not finish: {stats.state}, {stats.last_error}")
        entry = stats.metrics_history[-1]
        after = measure(tuner, test_rows, screens.folder)

        print("### Workflow accuracy on the unseen test variants, before → after the auto fine-tune\n")
        print("cells: top-1 / top-3 / mean margin (right workflow's score − best wrong one's)\n")
        print("| embedder | " + " | ".join(GROUP_KEYS) + " |\n|---|" + "---|" * len(GROUP_KEYS))
        print(table_row("screen:default (before)", before))
        print(table_row("after the fine-tune", after))
        losses = " → ".join(f"{v:.4f}" for v in entry.get("epoch_losses") or []) or "-"
        print(f"\nfine-tune: {entry['train_examples']} confirmed screens "
              f"({args.per_group or 'all'} per workflow and language), {entry['train_pairs']} pairs (OCR text ↔ "
              f"description, ↔ up to {args.references} other indexed screens' OCR text), {args.epochs} epochs, "
              f"lr {args.learning_rate:g}, MNRL; loss {losses}; {entry['seconds']:.0f} s from trigger to swap "
              f"(training, checkpoint, re-embedding {len(train_rows)} screens, swap); "
              f"screens OCR'd during it: {ocr.misses - misses}")
        print(f"serving {stats.model_spec}\n{cpu_report(cpu)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
