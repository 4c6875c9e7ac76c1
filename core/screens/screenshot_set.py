"""The bundled UI screenshot set: desktop screens for 12 workflows, rendered at first use, seeded.

Why a generator rather than shipped PNGs: a few hundred screenshots are tens of MB, while the
generator plus its labels (``core/data/screens``) are a few KB and render the same pixels for the
same seed (``core.screens.render``). ``bundled_screens()`` renders the set at first use into the
workspace cache (into a temporary folder renamed into place, so a crash never leaves half a set)
and reuses it. Each workflow gets ``variants`` screens (default 24), split train/test as
``core.screens.workflows`` says.
"""

from __future__ import annotations

import csv
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DataError
from core.progress import ProgressCallback, ProgressReporter
from core.screens.render import apply_artefacts, render_screen
from core.screens.workflows import (
    DEFAULT_SEED,
    DEFAULT_VARIANTS,
    GENERATOR_VERSION,
    WORKFLOWS_CSV,
    workflow_descriptions,
)
from storage.workspace import Workspace, atomic_path


@dataclass(frozen=True)
class ScreenSet:
    """A rendered set: ``screens.csv`` (id, image, workflow_id, description, variant, lang, theme, split, ...)."""

    folder: Path

    @property
    def csv(self) -> Path:
        return self.folder / "screens.csv"

    @property
    def workflows_csv(self) -> Path:
        return self.folder / "workflows.csv"

    def rows(self, split: str | None = None) -> list[dict[str, str]]:
        with open(self.csv, encoding="utf-8", newline="") as handle:
            return [row for row in csv.DictReader(handle) if split is None or row["split"] == split]

    def write_split(self, split: str, target: Path | None = None) -> Path:
        """A CSV of one split (image paths relative to the set's folder, so it must live there)."""
        rows = self.rows(split)
        path = target or self.folder / f"screens-{split}.csv"
        _write_csv(path, rows)
        return path


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def generate_screens(folder: str | Path, *, seed: int = DEFAULT_SEED, variants: int = DEFAULT_VARIANTS,
                     workflows: Sequence[str] | None = None, progress: ProgressCallback | None = None) -> ScreenSet:
    """Render the set into ``folder`` (created; must not exist yet, or be empty) and write its CSVs."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    descriptions = workflow_descriptions()
    chosen = list(workflows or descriptions)
    unknown = [w for w in chosen if w not in descriptions]
    if unknown:
        raise DataError(f"unknown workflow(s) {', '.join(unknown)}: choose from {', '.join(descriptions)}")
    rows = []
    reporter = ProgressReporter("render screenshots", len(chosen) * variants, callback=progress, unit="screen")
    for workflow_id in chosen:
        (target / workflow_id).mkdir(exist_ok=True)
        for variant in range(variants):
            image, info = render_screen(workflow_id, variant, seed=seed, variants=variants)
            image, suffix = apply_artefacts(image, info.artefacts, random.Random(f"{seed}:{workflow_id}:{variant}:fx"))
            relative = f"{workflow_id}/{info.item_id}{suffix}"
            image.save(target / relative)
            rows.append({"id": info.item_id, "image": relative, "workflow_id": workflow_id,
                         "description": descriptions[workflow_id], "variant": variant, "lang": info.lang,
                         "theme": info.theme, "split": info.split, "width": info.width, "height": info.height,
                         "artefacts": info.artefacts})
            reporter.advance(1)
    _write_csv(target / "screens.csv", rows)
    shutil.copyfile(WORKFLOWS_CSV, target / "workflows.csv")
    return ScreenSet(target)


def bundled_screens(workspace: Any = None, *, seed: int = DEFAULT_SEED, variants: int = DEFAULT_VARIANTS,
                    progress: ProgressCallback | None = None) -> ScreenSet:
    """The screenshot set in the workspace cache, rendered on first use (≈ 1 min for 288 screens)."""
    workspace = workspace or Workspace.open()
    folder = workspace.cache_dir / "screens" / f"v{GENERATOR_VERSION}-seed{seed}-n{variants}"
    if (folder / "screens.csv").is_file():
        return ScreenSet(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate_screens(tmp, seed=seed, variants=variants, progress=progress)
        try:
            os.replace(tmp, folder)  # a whole folder appears at once; a racing writer's copy is as good
        except OSError:
            if not (folder / "screens.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ScreenSet(folder)
