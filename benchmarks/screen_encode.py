"""What one screenshot costs screen:default at 1280×800: OCR cold, OCR cached, batch sequential vs parallel.

Why: OCR is the slow step, so the embedder caches it (by image content hash, in memory and on
disk) and can run tesseract in worker processes. This measures each case on screens of the
bundled set rendered at 1280×800:

- cold: a new screenshot, one call per screenshot (tesseract + text model + layout);
- OCR cache hit: the same screenshots again with the embedding cache off (what a re-embedding
  after a fine-tune of the text model costs: the text model runs, tesseract does not);
- embedding cache hit: the same screenshots with both caches on;
- batch of 32: one ``encode_images`` call with OCR sequential (1 worker) vs in parallel worker
  processes (one per core, tesseract limited to one thread each).

Run from the repository root::

    nice -n 19 .venv/bin/python benchmarks/screen_encode.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_line


def screens_at(size: tuple[int, int], count: int) -> list:
    """``count`` screens of the bundled set's workflows whose variant renders at ``size``."""
    from core.screens import render_screen, variant_info, workflow_ids

    found = []
    variant = 0
    while len(found) < count:
        for workflow in workflow_ids():
            info = variant_info(workflow, variant)
            if (info.width, info.height) == size and len(found) < count:
                found.append(render_screen(workflow, variant)[0])
        variant += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=8, help="screenshots timed one call at a time")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    from core.embedders import EmbeddingCache, load_embedder
    from core.embedders.screen import load_screen_embedder
    from storage.workspace import Workspace

    # The text model's own cache is the embedder's embedding cache; here it is off, so "OCR cache hit" runs it.
    text = load_embedder("default", device="cpu", cache=False)
    images = screens_at((1280, 800), max(args.single, args.batch))

    def fresh(workers: int, cache: EmbeddingCache | None) -> object:
        workspace = Workspace.open(tempfile.mkdtemp(prefix="screen-encode-"))  # empty OCR cache on disk
        # (``cache is None``, not falsiness: an empty EmbeddingCache has len 0.)
        return load_screen_embedder("screen:default", cache=EmbeddingCache(0) if cache is None else cache,
                                    ocr_workers=workers, workspace=workspace, load_text=lambda _spec: text)

    print(f"## screen:default encode cost at 1280×800\n\n`nice -n 19 .venv/bin/python {' '.join(sys.argv)}` — "
          f"{machine_line()}\n")
    embedder = fresh(1, EmbeddingCache(1000))
    embedder.encode_images(images[-1])  # warm-up: model and tesseract start-up are not per-screenshot cost
    single = images[: args.single]
    rows = []
    started = time.perf_counter()
    for image in single:
        embedder.encode_images(image)
    rows.append(("cold (OCR + text model + layout), one call per screenshot", time.perf_counter() - started))
    embedder.cache.clear()
    started = time.perf_counter()
    for image in single:
        embedder.encode_images(image)
    rows.append(("OCR cache hit (embedding cache cleared), one call each", time.perf_counter() - started))
    started = time.perf_counter()
    for image in single:
        embedder.encode_images(image)
    rows.append(("embedding cache hit, one call each", time.perf_counter() - started))
    print(f"| case ({len(single)} screenshots) | ms per screenshot |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000 / len(single):.1f} |", flush=True)

    batch = images[: args.batch]
    print(f"\n| batch of {len(batch)}, cold OCR | seconds | ms per screenshot |\n|---|---:|---:|")
    timings = {}
    for workers in (1, os.cpu_count() or 1):
        embedder = fresh(workers, None)
        embedder.encode_images(images[-1:] * 2 if workers > 1 else images[-1])  # start the worker processes
        embedder.ocr_cache.capacity = 0
        started = time.perf_counter()
        embedder.encode_images(batch)
        timings[workers] = time.perf_counter() - started
        label = "sequential (1 process)" if workers == 1 else f"parallel ({workers} worker processes)"
        print(f"| {label} | {timings[workers]:.1f} | {timings[workers] * 1000 / len(batch):.0f} |", flush=True)
        embedder.close()
    if len(timings) > 1:
        print(f"\nparallel speed-up: {timings[1] / timings[max(timings)]:.2f}× on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
