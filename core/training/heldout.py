"""What a run keeps of its split so that nothing measured later leaks training data: the queries of its
training, validation and test splits (by id and by text) and the test split itself, written beside the model.

An evaluation of the run, or of any model trained on the same queries, compares its queries with these and
says how many it shares (``core.evaluation.reports``); the Compare page evaluates a run against its own base on
the test split written here, which reproduces the gate's figures.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SPLIT_NAMES = ("train", "validation", "test")
TEST_SET_FOLDER = "test_split"
"""Inside a run's model folder: the corpus/queries/qrels CSVs the gate judged the run on."""
SEEN_SPLITS = ("train", "validation")
"""Splits whose queries shaped the model: trained on, or used to keep the best epoch and fit the principal axes."""


def query_key(text: str) -> str:
    """Two queries are the same query when they differ only in case and spacing."""
    return re.sub(r"\s+", " ", str(text)).strip().casefold()


def split_queries(splits: Any, data_format: str) -> dict[str, Any]:
    """The queries of each split, by id (when the data has ``query_id``) and by text; classes data holds
    no queries (its texts are judged by class), so nothing is kept for it."""
    if data_format == "classes":
        return {}
    kept: dict[str, Any] = {}
    for name in SPLIT_NAMES:
        frame = getattr(splits, name)
        texts = list(dict.fromkeys(frame["anchor"].astype(str))) if "anchor" in frame.columns else []
        ids = list(dict.fromkeys(frame["query_id"].astype(str))) if "query_id" in frame.columns else []
        kept[name] = {"ids": ids, "texts": texts}
    return kept


def seen_query_keys(splits: dict[str, Any] | None) -> set[str]:
    """The normalised texts of the queries a run trained or was tuned on."""
    return {query_key(text) for name in SEEN_SPLITS for text in ((splits or {}).get(name) or {}).get("texts", [])}


def test_set_folder(model_path: str | Path) -> Path:
    return Path(model_path) / TEST_SET_FOLDER
