"""Image set run: compare-embedders, an embedding map and the background fine-tuner on real digits.

Data: scikit-learn's bundled handwritten digits (real 8×8 scans, labels 0–9), written as
64×64 PNGs by benchmarks/_digits.py: ``--per-label`` of each digit are indexed, the next
``--confirm-per-label`` are fed to the fine-tuner as confirmed examples.

Models: no CLIP weights ship offline, so both contenders are tiny open_clip models with
*random* weights (the tests' config, and a wider 64 px one). Random weights are honest about
one thing only: plumbing and speed. Their label discrimination is whatever random features
of the pixels give, not what a trained CLIP would give; do not read a ranking into it.
What the run does show on real images is the fine-tuner: held-out top-1 before/after a
contrastive fine-tune of the image tower on confirmed examples.

Every step runs the real CLI (``python -m embtune ...``) in a throw-away workspace; the
commands are printed. Run from the repository root::

    .venv/bin/python benchmarks/image_compare.py            # writes docs/images/digits-map*.png
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine_line
from _digits import write_digits

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
WIDER = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def save_random_clip(folder: Path, config: dict, seed: int) -> Path:
    import open_clip
    import torch

    from core.embedders import save_clip_folder

    torch.manual_seed(seed)
    return save_clip_folder(open_clip.CLIP(**copy.deepcopy(config)), config, folder)


def embtune(*args: str) -> str:
    """Run the CLI as a user would; print the command and its output."""
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print(f"$ embtune {shown}", flush=True)
    done = subprocess.run([sys.executable, "-m", "embtune", *args], cwd=REPO, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"embtune {shown} failed:\n{done.stderr}")
    print(done.stdout, flush=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-label", type=int, default=30)
    parser.add_argument("--confirm-per-label", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "digits-map.png")
    args = parser.parse_args()

    print(f"# image set run: {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="embtune-digits-") as tmp_name:
        tmp = Path(tmp_name)
        table = write_digits(tmp / "indexed", per_label=args.per_label)
        confirm_table = write_digits(tmp / "confirm", per_label=args.confirm_per_label, offset=args.per_label)
        tiny = save_random_clip(tmp / "tiny-clip", TINY, seed=0)
        wider = save_random_clip(tmp / "wider-clip", WIDER, seed=1)
        workspace = ["--workspace", str(tmp / "ws")]

        print(f"## compare-embedders: {args.per_label * 10} digits, 10 labels, two random-weight tiny CLIPs\n")
        embtune("compare-embedders", "--data", str(table), "--image-column", "image", "--label-column", "label",
                "--model", f"clip:{tiny}", "--model", f"clip:{wider}", "--device", "cpu")

        print("## index + map (tiny CLIP, random weights)\n")
        embtune(*workspace, "index", str(table), "--collection", "digits", "--image-column", "image",
                "--id-column", "id", "--model", f"clip:{tiny}", "--device", "cpu")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        embtune(*workspace, "map", "digits", "--method", "umap", "--color-by", "label", "--out", str(args.out))

        print(f"## background fine-tuner: {args.confirm_per_label * 10} confirmed (unindexed) digits\n")
        from core.online import FineTunerConfig, LightweightFineTuner
        from storage.db import Database
        from storage.workspace import Workspace

        ws = Workspace.open(tmp / "ws")
        count = args.confirm_per_label * 10
        tuner = LightweightFineTuner("digits", workspace=ws, db=Database(ws.db_url()), config=FineTunerConfig(
            trigger_threshold=count, epochs=args.epochs, learning_rate=args.learning_rate, batch_size=32,
            field="label", device="cpu"))
        import csv

        with open(confirm_table, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        started = time.perf_counter()
        for row in rows:
            tuner.confirm(confirm_table.parent / row["image"], row["label"])
        tuner.wait()
        print(f"(confirmed {len(rows)} examples and trained in {time.perf_counter() - started:.1f} s)")
        embtune(*workspace, "debug", "finetuning", "--collection", "digits")
        tuned_map = args.out.with_name(args.out.stem + "-finetuned" + args.out.suffix)
        embtune(*workspace, "map", "digits", "--method", "umap", "--color-by", "label", "--out", str(tuned_map))


if __name__ == "__main__":
    main()
