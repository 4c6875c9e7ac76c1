"""The screenshot set's workflows and variants: which 12 workflows, their descriptions and screen
labels per language (``core/data/screens``: data, not code), and what variant ``v`` of a workflow is.

Variant ``v`` is in language ``LANGS[v % 3]`` and theme ``THEMES[(v // 3) % 2]``, so every block of 6
consecutive variants holds each language × theme once; one block per workflow (chosen by the seed) is
the **test** split, unseen by indexing and fine-tuning, the others are **train**. The seed also draws
the screen size and the artefacts (noise, JPEG) of each variant.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SCREENS_DIR = Path(__file__).resolve().parents[1] / "data" / "screens"
WORKFLOWS_CSV = SCREENS_DIR / "workflows.csv"
UI_TEXT_JSON = SCREENS_DIR / "ui_text.json"
LANGS = ("en", "fr", "ru")
THEMES = ("light", "dark")
DEFAULT_VARIANTS = 24
DEFAULT_SEED = 0
# Bump when the renderer changes, so cached sets of an older renderer are not reused.
GENERATOR_VERSION = 1
SCREEN_SIZES = ((1280, 800), (1366, 768), (1440, 900), (1024, 640), (1920, 1080), (960, 600))


@lru_cache(maxsize=1)
def ui_text() -> dict[str, Any]:
    """The labels of every workflow screen, per language (data, not code)."""
    return json.loads(UI_TEXT_JSON.read_text(encoding="utf-8"))


def workflow_ids() -> list[str]:
    with open(WORKFLOWS_CSV, encoding="utf-8", newline="") as handle:
        return [row["workflow_id"] for row in csv.DictReader(handle)]


def workflow_descriptions() -> dict[str, str]:
    with open(WORKFLOWS_CSV, encoding="utf-8", newline="") as handle:
        return {row["workflow_id"]: row["description"] for row in csv.DictReader(handle)}


@dataclass(frozen=True)
class ScreenVariant:
    """What a variant is (the columns of the set's CSV besides the image path)."""

    workflow_id: str
    variant: int
    lang: str
    theme: str
    split: str
    width: int
    height: int
    artefacts: str

    @property
    def item_id(self) -> str:
        return f"{self.workflow_id}-{self.variant:02d}"


def test_block(workflow_id: str, seed: int, variants: int) -> int:
    """Which block of 6 variants is this workflow's unseen test split (seeded per workflow)."""
    blocks = max(1, variants // (len(LANGS) * len(THEMES)))
    return random.Random(f"{seed}:split:{workflow_id}").randrange(blocks)


def variant_info(workflow_id: str, variant: int, seed: int = DEFAULT_SEED,
                 variants: int = DEFAULT_VARIANTS) -> ScreenVariant:
    per_block = len(LANGS) * len(THEMES)
    split = "test" if variant // per_block == test_block(workflow_id, seed, variants) else "train"
    rng = random.Random(f"{seed}:{workflow_id}:{variant}")
    width, height = rng.choice(SCREEN_SIZES)
    artefacts = rng.choice(["none", "none", "noise", "jpeg", "noise+jpeg"])
    return ScreenVariant(workflow_id, variant, LANGS[variant % 3], THEMES[(variant // 3) % 2], split, width, height,
                         artefacts)
