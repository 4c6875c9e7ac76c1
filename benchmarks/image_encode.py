"""Image encode benchmark: embtune's ``ClipEmbedder.encode_images`` against plain open_clip.

Why: the embedder wraps open_clip with image decoding checks (truncated/empty/huge images),
BGR handling, progress/cancel, a cache and normalisation. This measures what that costs per
image at batch 1 (an interactive lookup) and batch 32 (indexing), against plain open_clip
doing the same work on the same files: ``PIL.Image.open`` → the model's own preprocess →
``encode_image`` under ``torch.inference_mode`` → L2 normalisation. The cache is off on the
embtune side, so both sides do all the work. Rounds are interleaved (the order alternates)
and the ratio is the median of per-round ratios, so machine noise hits both alike.

Model: no CLIP weights ship offline (see README), so the default is open_clip's real
ViT-B-32 architecture with random weights, saved and loaded as a ``clip:FOLDER``; speed
depends on the architecture, not on the weight values. ``--tiny`` uses the tests' tiny model.
Images: scikit-learn's handwritten digits written as 64×64 PNGs (benchmarks/_digits.py).

Run from the repository root::

    .venv/bin/python benchmarks/image_encode.py              # ViT-B-32 (random weights), 64 images, 5 rounds
    .venv/bin/python benchmarks/image_encode.py --tiny --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import cpu_report, cpu_snapshot, machine_line, timed
from _digits import write_digits

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_model_folder(folder: Path, arch: str, tiny: bool) -> tuple[Path, str]:
    """Save a random-weight open_clip model as a clip: folder; returns it and a description."""
    import open_clip
    import torch

    from core.embedders import save_clip_folder

    torch.manual_seed(0)
    if tiny:
        config = TINY_CONFIG
        model = open_clip.CLIP(**config)
        name = "tiny CLIP (32 px, 1-layer towers, the tests' config)"
    else:
        config = open_clip.get_model_config(arch)
        model = open_clip.create_model(arch, pretrained=None)
        name = f"open_clip {arch} architecture, random weights"
    save_clip_folder(model, config, folder)
    params = sum(p.numel() for p in model.visual.parameters()) / 1e6
    return folder, f"{name}; image tower {params:.2f} M parameters"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from core.embedders import load_embedder

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = tempfile.TemporaryDirectory(prefix="embtune-image-bench-")
    tmp = Path(workdir.name)
    write_digits(tmp / "digits", per_label=max(1, -(-args.images // 10)))
    paths = sorted((tmp / "digits" / "images").glob("*.png"))[: args.images]
    folder, description = build_model_folder(tmp / "model", args.arch, args.tiny)

    embedder = load_embedder(f"clip:{folder}", device="cpu", cache=False, reuse=False)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device="cpu")
    model.eval()

    def plain(batch_paths: list[Path]) -> np.ndarray:
        pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in batch_paths])
        with torch.inference_mode():
            return F.normalize(model.encode_image(pixels), dim=-1).numpy()

    def ours(batch_paths: list[Path]) -> np.ndarray:
        return embedder.encode_images(batch_paths, batch_size=len(batch_paths), show_progress=False)

    difference = float(np.abs(ours(paths[:8]) - plain(paths[:8])).max())
    contenders: dict[str, Callable[[list[Path]], np.ndarray]] = {"embtune": ours, "open_clip": plain}
    for run in contenders.values():  # warm-up: first calls allocate
        run(paths[:2])

    start = cpu_snapshot()
    rows = []
    for batch in (1, 32):
        chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
        per_round: dict[str, list[float]] = {name: [] for name in contenders}
        for round_number in range(args.rounds):
            order = list(contenders) if round_number % 2 == 0 else list(reversed(contenders))
            for name in order:
                seconds = timed(lambda run=contenders[name], chunks=chunks: [run(c) for c in chunks])
                per_round[name].append(seconds * 1000 / len(paths))
        ratios = [a / b for a, b in zip(per_round["embtune"], per_round["open_clip"], strict=True)]
        rows.append((batch, statistics.median(per_round["embtune"]), statistics.median(per_round["open_clip"]),
                     statistics.median(ratios), ratios))

    print(f"# image encode benchmark: {machine_line()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"open_clip {open_clip.__version__}")
    print(f"# model: {description}; input {embedder.preprocess.transforms[0].size} px")
    print(f"# {len(paths)} scikit-learn digits as 64×64 PNG files, {args.rounds} interleaved rounds, "
          f"embtune cache off; max |embtune - open_clip| = {difference:.1e}")
    print(f"# {cpu_report(start)}")
    print()
    print("| batch | embtune ms/image | open_clip ms/image | ratio (embtune / open_clip) | per-round ratios |")
    print("|---:|---:|---:|---:|---|")
    for batch, mine, theirs, ratio, ratios in rows:
        print(f"| {batch} | {mine:.2f} | {theirs:.2f} | **{ratio:.3f}** | {', '.join(f'{r:.3f}' for r in ratios)} |")
    workdir.cleanup()


if __name__ == "__main__":
    main()
