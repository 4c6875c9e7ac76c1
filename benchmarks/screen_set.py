"""The bundled screenshot set, measured: workflow accuracy, layout weight, match threshold, comparison, map.

Why: ``screen:default`` (tesseract OCR + the bundled MiniLM + a layout grid) is the only image
embedder with real weights offline. This shows how well it recognises workflows on screens it
has not seen (the set's test variants: other sizes, orders, languages, themes, artefacts) against
a tiny random open_clip (the only CLIP available offline, so a floor, not a rival), and derives
from data the two numbers the embedder and ``match`` use: the layout weight and the threshold.

Steps (all on the set rendered by ``core.screens``, 12 workflows × 24 variants):

1. ``--preprocessing``: label words of the screens read by tesseract per preprocessing choice.
2. OCR text and layout vectors of every screen (OCR cached in the workspace, so a re-run is quick);
   the layout weight w is chosen by leave-one-out top-1 **on the training variants only**.
3. Index the training variants (``index_file`` with an image column) and ``match`` every test
   variant: top-1 / top-3, by language and theme, for screen:default (and text only) and the tiny CLIP.
4. Threshold: lowest score at which ≥ 95 % of confident answers are right, on the training
   variants (leave-one-out, plus each workflow's screens queried with that workflow left out);
   then the precision / recall it gives on the test variants.
5. ``compare_embedders`` on the test variants; an ``embtune map`` PNG of the whole set by workflow.

Run from the repository root::

    nice -n 19 .venv/bin/python benchmarks/screen_set.py --preprocessing --map docs/images/screens-map.png
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._common import machine_line

WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
PRECISION_TARGET = 0.95
PREPROCESSING_CHOICES = (("gray",), ("gray", "invert_dark"), ("gray", "upscale"), ("gray", "invert_dark", "upscale"),
                         ("gray", "invert_dark", "upscale", "threshold"))


def label_words(workflow: str, lang: str) -> set[str]:
    """The words a screen of this workflow shows in its labels (what OCR should read)."""
    from core.screens import ui_text

    labels = ui_text()[workflow][lang]
    parts = [labels["title"], labels["heading"], labels["app"], *labels.get("nav", [])]
    for item in labels["items"]:
        for value in item[1:]:
            parts.extend(value if isinstance(value, list) else [value])
    return {w for w in re.findall(r"\w{3,}", " ".join(parts).lower()) if not w.isdigit()}


def preprocessing_table(rows: list[dict[str, str]], folder: Path, per_workflow: int) -> None:
    from core.images import read_image
    from core.screens.ocr import read_text

    rng = random.Random(0)
    by_workflow = defaultdict(list)
    for row in rows:
        if row["split"] == "train":
            by_workflow[row["workflow_id"]].append(row)
    sample = [r for items in by_workflow.values() for r in rng.sample(items, per_workflow)]
    images = [(r, read_image(folder / r["image"])) for r in sample]
    print(f"\n### OCR preprocessing ({len(sample)} training-variant screens, {per_workflow} per workflow)\n")
    print("| preprocessing | label words read | share | s per screen |\n|---|---:|---:|---:|")
    for steps in PREPROCESSING_CHOICES:
        found = total = 0
        seconds = 0.0
        for row, image in images:
            result = read_text(image, steps=steps)
            expected = label_words(row["workflow_id"], row["lang"])
            found += len(expected & set(re.findall(r"\w{3,}", result.text.lower())))
            total += len(expected)
            seconds += result.seconds
        print(f"| {' + '.join(steps)} | {found}/{total} | {found / total:.3f} | {seconds / len(images):.2f} |",
              flush=True)


def best_per_workflow(similarity: np.ndarray, labels: np.ndarray, workflows: list[str]) -> np.ndarray:
    """(queries × workflows): each workflow's best score (max over its items), as ``match`` ranks."""
    return np.stack([np.where(labels[None, :] == w, similarity, -np.inf).max(axis=1) for w in workflows], axis=1)


def loo_top1(vectors: np.ndarray, labels: np.ndarray) -> float:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    return float((labels[similarity.argmax(axis=1)] == labels).mean())


def calibrate(vectors: np.ndarray, labels: np.ndarray, workflows: list[str]) -> tuple[float, float, float]:
    """Lowest threshold with ≥ 95 % precision (LOO + left-out-workflow negatives); its precision, recall."""
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    scores = best_per_workflow(similarity, labels, workflows)
    truth = np.array([workflows.index(label) for label in labels])
    best, right = scores.max(axis=1), scores.argmax(axis=1) == truth
    # Left-out workflow: the same screens, their own workflow removed from the index → any answer is wrong.
    masked = scores.copy()
    masked[np.arange(len(labels)), truth] = -np.inf
    negatives = masked.max(axis=1)
    candidates = np.unique(np.concatenate([best, negatives]))
    for threshold in candidates:
        correct = int((right & (best >= threshold)).sum())
        wrong = int((~right & (best >= threshold)).sum() + (negatives >= threshold).sum())
        if correct and correct / (correct + wrong) >= PRECISION_TARGET:
            return float(threshold), correct / (correct + wrong), correct / len(labels)
    return 1.0, 0.0, 0.0


def threshold_on(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                 workflows: list[str], threshold: float) -> tuple[float, float]:
    scores = best_per_workflow(test @ train.T, train_labels, workflows)
    truth = np.array([workflows.index(label) for label in test_labels])
    best, right = scores.max(axis=1), scores.argmax(axis=1) == truth
    masked = scores.copy()
    masked[np.arange(len(truth)), truth] = -np.inf
    correct = int((right & (best >= threshold)).sum())
    wrong = int((~right & (best >= threshold)).sum() + (masked.max(axis=1) >= threshold).sum())
    return (correct / (correct + wrong) if correct + wrong else 1.0), correct / len(truth)


def accuracy_tables(name: str, results: list[tuple[dict[str, str], list[str]]]) -> None:
    groups: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for row, ranked in results:
        hit = (ranked[:1] == [row["workflow_id"]], row["workflow_id"] in ranked[:3])
        for key in ("all", f"lang={row['lang']}", f"theme={row['theme']}"):
            groups[key].append(hit)
    cells = " | ".join(f"{np.mean([h[0] for h in groups[k]]):.3f} / {np.mean([h[1] for h in groups[k]]):.3f}"
                       for k in GROUP_KEYS)
    print(f"| {name} | {cells} |", flush=True)


GROUP_KEYS = ("all", "lang=en", "lang=fr", "lang=ru", "theme=light", "theme=dark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "embtune-screen-bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", type=int, default=24)
    parser.add_argument("--preprocessing", action="store_true", help="also measure the OCR preprocessing choices")
    parser.add_argument("--preprocessing-per-workflow", type=int, default=1)
    parser.add_argument("--map", type=Path, default=None, help="write the UMAP PNG of the whole set here")
    parser.add_argument("--no-compare", action="store_true")
    args = parser.parse_args()

    from core.collection.named import index_file, open_collection
    from core.embedders import load_embedder
    from core.embedders.screen import DEFAULT_LAYOUT_WEIGHT, layout_vector
    from core.images import read_image
    from core.matching import match
    from core.screens import bundled_screens
    from storage.db import Database
    from storage.workspace import Workspace
    from tests.conftest import build_tiny_clip

    workspace = Workspace.open(args.workspace)
    db = Database(workspace.default_db_url)
    started = time.perf_counter()
    screens = bundled_screens(workspace, seed=args.seed, variants=args.variants)
    rows = screens.rows()
    print(f"## Screenshot set: {len(rows)} screens, {len({r['workflow_id'] for r in rows})} workflows, seed "
          f"{args.seed}\n\n`{' '.join(['nice -n 19 .venv/bin/python', *sys.argv])}` — {machine_line()}\n"
          f"(set rendered or found in {time.perf_counter() - started:.0f} s)")
    if args.preprocessing:
        preprocessing_table(rows, screens.folder, args.preprocessing_per_workflow)

    # OCR once for every screen (cached on disk); text and layout parts kept apart for the weight sweep.
    text_only = load_embedder("screen:default?layout=0", device="cpu")
    paths = [screens.folder / r["image"] for r in rows]
    started = time.perf_counter()
    text_vectors = text_only.encode_images(paths)
    readings = text_only.read_screens(paths)
    ocr_seconds = time.perf_counter() - started
    layouts = np.stack([layout_vector(read_image(p)) for p in paths])
    labels = np.array([r["workflow_id"] for r in rows])
    train = np.array([r["split"] == "train" for r in rows])
    workflows = sorted(set(labels))
    print(f"\nOCR + text embedding of {len(rows)} screens: {ocr_seconds:.0f} s (0 when cached); "
          f"{sum(r.no_text for r in readings)} screens with no text read; mean "
          f"{np.mean([len(r.words) for r in readings]):.0f} "
          "words per screen")

    print("\n### Layout weight w (leave-one-out top-1 on the training variants only)\n")
    print("| w | " + " | ".join(f"{w:g}" for w in WEIGHTS) + " |\n|---|" + "---:|" * len(WEIGHTS))
    sweep = {}
    for w in WEIGHTS:
        fused = np.concatenate([np.sqrt(1 - w) * text_vectors, np.sqrt(w) * layouts], axis=1) if w else text_vectors
        fused = fused / np.maximum(np.linalg.norm(fused, axis=1, keepdims=True), 1e-12)
        sweep[w] = (loo_top1(fused[train], labels[train]), fused)
    print("| top-1 | " + " | ".join(f"{sweep[w][0]:.3f}" for w in WEIGHTS) + " |")
    # Ties keep the current default: a nonzero layout part is what lets a text-less screen still match.
    best = max(round(sweep[w][0], 6) for w in WEIGHTS)
    tied = [w for w in WEIGHTS if round(sweep[w][0], 6) == best]
    chosen = DEFAULT_LAYOUT_WEIGHT if DEFAULT_LAYOUT_WEIGHT in tied else tied[0]
    print(f"\nbest top-1 on the training variants: w in {{{', '.join(f'{w:g}' for w in tied)}}}; chosen w = "
          f"{chosen:g} (core.embedders.screen.DEFAULT_LAYOUT_WEIGHT = {DEFAULT_LAYOUT_WEIGHT:g}); w = 0 is text only")

    # Index the training variants, match every unseen test variant through index_file + match.
    train_csv = screens.write_split("train")
    test_rows = screens.rows("test")
    clip_dir = Path(args.workspace) / "tiny-clip"
    if not (clip_dir / "open_clip_config.json").is_file():
        build_tiny_clip(clip_dir)
    contenders = [("screen:default", "screen:default"), ("screen:default?layout=0", "screen (text only, w=0)"),
                  (f"clip:{clip_dir}", "tiny random open_clip")]
    print(f"\n### Workflow accuracy on unseen test variants ({len(test_rows)} screens; index = "
          f"{int(train.sum())} training variants; top-1 / top-3 via index_file + match)\n")
    print("| embedder | " + " | ".join(GROUP_KEYS) + " |\n|---|" + "---|" * len(GROUP_KEYS))
    for spec, name in contenders:
        collection_name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"screens-train-{name}")[:90]
        index_file(train_csv, collection=collection_name, image_column="image", model=spec, workspace=workspace,
                   db=db, show_progress=False)
        collection = open_collection(collection_name, workspace=workspace, db=db)
        results = [(row, [m.workflow_id for m in match(collection, screens.folder / row["image"], k=3).matches])
                   for row in test_rows]
        accuracy_tables(name, results)

    fused = sweep[DEFAULT_LAYOUT_WEIGHT][1] if DEFAULT_LAYOUT_WEIGHT in sweep else sweep[chosen][1]
    threshold, precision, recall = calibrate(fused[train], labels[train], workflows)
    test_precision, test_recall = threshold_on(fused[train], labels[train], fused[~train], labels[~train], workflows,
                                               threshold)
    print(f"\n### Match threshold for screen:default (target: {PRECISION_TARGET:.0%} precision of confident answers)"
          f"\n\n| data | threshold | precision | recall (confident and right) |\n|---|---:|---:|---:|\n"
          f"| training variants (LOO + left-out workflow) | {threshold:.3f} | {precision:.3f} | {recall:.3f} |\n"
          f"| unseen test variants vs training index | {threshold:.3f} | {test_precision:.3f} | {test_recall:.3f} |")

    if not args.no_compare:
        from core.compare_embedders import compare_embedders

        test_csv = screens.write_split("test")
        result = compare_embedders(test_csv, [c[0] for c in contenders], label_column="workflow_id",
                                   image_column="image", device="cpu")
        print(f"\n### compare-embedders on the test variants ({result.items} screens, OCR not cached)\n\n```")
        print(result.table())
        print(f"\nverdict: {result.verdict()}\n```")

    if args.map is not None:
        from core.maps import map_collection

        index_file(screens.csv, collection="screens", image_column="image", model="screen:default",
                   workspace=workspace, db=db, show_progress=False)
        report = map_collection("screens", out=args.map, workspace=workspace, db=db, method="umap",
                                color_by="workflow_id")
        print(f"\nmap: {report.points} screens, UMAP, coloured by workflow_id → {report.out}")


if __name__ == "__main__":
    main()
