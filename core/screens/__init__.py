"""Screens: reading screenshots (OCR) and the bundled synthetic screenshot set.

- ``ocr``: tesseract through pytesseract — languages, preprocessing, the on-disk OCR cache
- ``workflows``: the set's 12 workflows, their labels per language, what variant ``v`` is (split, size)
- ``render``: drawing one screenshot with PIL, seeded, and its artefacts
- ``screenshot_set``: rendering the whole set once into the workspace cache, its CSVs and splits

The screen embedder itself (OCR text + a text model + layout) is ``core.embedders.screen``.
"""

from core.screens.render import apply_artefacts, render_screen
from core.screens.screenshot_set import ScreenSet, bundled_screens, generate_screens
from core.screens.workflows import (
    DEFAULT_SEED,
    DEFAULT_VARIANTS,
    LANGS,
    THEMES,
    ScreenVariant,
    test_block,
    ui_text,
    variant_info,
    workflow_descriptions,
    workflow_ids,
)

__all__ = ["DEFAULT_SEED", "DEFAULT_VARIANTS", "LANGS", "THEMES", "ScreenSet", "ScreenVariant", "apply_artefacts",
           "bundled_screens", "generate_screens", "render_screen", "test_block", "ui_text", "variant_info",
           "workflow_descriptions", "workflow_ids"]
