"""Which workflow is this screenshot from? Nearest screenshots, aggregated per workflow.

An image collection holds screenshots with a ``workflow_id`` in their metadata (any field
can be named). ``match`` embeds a new screenshot with the collection's own clip: model,
looks up its nearest stored screenshots and keeps each workflow's best score, so one
workflow with many similar screens does not crowd out the others. ``confident`` says
whether the best workflow's score reaches the threshold: below it the caller should ask
the user rather than act.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from core.collection import Collection, check_k
from core.errors import CollectionError
from core.images import ImageInput

# Cosine between two screenshots' CLIP vectors above which the best match is trusted.
#
# How to choose it from data: take screenshots that were NOT indexed, some from known
# workflows and some from screens that belong to none; run ``match`` on each and keep the
# best score and whether its workflow was right. Then pick the lowest threshold at which
# the matches above it are right often enough for the use (e.g. 95 % precision), and check
# how many right answers it leaves below (the recall you give up). Scores depend on the
# model (another CLIP gives another scale), so calibrate per model. 0.85 is a starting
# point only: image–image cosines of one CLIP for screens of the same app screen sit
# around 0.9 and above, unrelated screens usually well below; until it is calibrated
# on real screenshots treat ``confident`` as a hint.
DEFAULT_MATCH_THRESHOLD = 0.85
# The same choice for the offline screenshot embedder (``screen:default``: OCR text + layout),
# calibrated on the bundled screenshot set by benchmarks/screen_set.py (docs/benchmarks.md,
# "Screenshot set"): the lowest threshold at which ≥ 95 % of confident answers are right, where the
# queries are training-variant screenshots matched against the other training variants and
# screenshots of workflows left out of the index must come out not confident. Measured: 0.766 gives
# precision 0.952 / recall 0.829 there, and precision 0.951 / recall 0.806 on the unseen test variants
# (72 screens against the 216 training ones). Below it, ask the user rather than act.
DEFAULT_SCREEN_MATCH_THRESHOLD = 0.77
DEFAULT_GROUP_FIELD = "workflow_id"
# How many nearest screenshots are looked at per requested workflow (each workflow may own many).
CANDIDATES_PER_RESULT = 20


@dataclass(frozen=True)
class WorkflowMatch:
    """One workflow: its best score, the stored screenshot that gave it, and how many of its screens were near."""

    workflow_id: str
    score: float
    item_id: str
    hits: int


@dataclass(frozen=True)
class MatchResult:
    matches: list[WorkflowMatch]
    confident: bool
    threshold: float
    field: str = DEFAULT_GROUP_FIELD
    candidates: int = 0
    # Caveats about how the screenshot was embedded (e.g. no text was read: layout only).
    notes: tuple[str, ...] = ()
    model_fingerprint: str | None = None
    """Which weights answered (a background fine-tune swaps models; logs and tests read this)."""

    @property
    def best(self) -> WorkflowMatch | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": asdict(self.best) if self.best else None}


def match(
    collection: Collection,
    screenshot: ImageInput,
    k: int = 3,
    *,
    threshold: float | None = None,
    field: str = DEFAULT_GROUP_FIELD,
) -> MatchResult:
    """Top ``k`` workflows for a screenshot (path, PIL image or OpenCV BGR array), best first.

    The collection must have been opened with its image embedder (``open_collection``).
    ``threshold`` defaults to the one calibrated for that kind of embedder (``default_threshold``).
    """
    check_k(k)
    embedder = collection.embedder
    if threshold is None:
        threshold = default_threshold(embedder)
    if not -1.0 <= threshold <= 1.0:
        raise CollectionError(f"threshold {threshold} is not a cosine: choose a value in -1..1")
    if embedder is None or not hasattr(embedder, "encode_images"):
        raise CollectionError("matching screenshots needs a collection built with an image model (screen: or "
                              "clip:), opened with it")
    vector = np.asarray(embedder.encode_images(screenshot), dtype=np.float32)
    result = match_vector(collection, vector, k, threshold=threshold, field=field,
                          model_fingerprint=getattr(embedder, "fingerprint", None))
    # The screenshot embedder says when it read no text (the match then rests on the layout alone).
    notes = tuple(embedder.image_notes(screenshot)) if hasattr(embedder, "image_notes") else ()
    return replace(result, notes=notes) if notes else result


def default_threshold(embedder: Any) -> float:
    """The calibrated threshold for this kind of embedder (OCR-text and CLIP scores differ in scale)."""
    from core.embedders.screen import is_screen_spec

    screen = is_screen_spec(getattr(embedder, "spec", None))
    return DEFAULT_SCREEN_MATCH_THRESHOLD if screen else DEFAULT_MATCH_THRESHOLD


def match_vector(
    collection: Collection,
    vector: np.ndarray,
    k: int = 3,
    *,
    threshold: float = DEFAULT_MATCH_THRESHOLD,
    field: str = DEFAULT_GROUP_FIELD,
    model_fingerprint: str | None = None,
) -> MatchResult:
    """Top ``k`` workflows for an already embedded input (an image, or a text for text collections).

    Shared by ``match`` and the background fine-tuner, which matches texts as well as images.
    """
    check_k(k)
    if not -1.0 <= threshold <= 1.0:
        raise CollectionError(f"threshold {threshold} is not a cosine: choose a value in -1..1")
    if len(collection) and not any(field in collection.item(i)["metadata"] for i in collection.ids[:1000]):
        raise CollectionError(f"the collection's items have no {field!r} metadata: index a file with a {field} column "
                              "or name another field")
    depth = min(len(collection), max(k * CANDIDATES_PER_RESULT, 50))
    hits = collection.search(vector, depth) if depth else []
    best: dict[str, WorkflowMatch] = {}
    for hit in hits:
        if hit.metadata.get(field) is None:
            continue
        workflow = str(hit.metadata[field])
        seen = best.get(workflow)
        if seen is None:  # hits come best first, so the first one is the workflow's best score
            best[workflow] = WorkflowMatch(workflow, float(hit.score), hit.id, 1)
        else:
            best[workflow] = WorkflowMatch(workflow, seen.score, seen.item_id, seen.hits + 1)
    matches = sorted(best.values(), key=lambda m: -m.score)[:k]
    confident = bool(matches) and matches[0].score >= threshold
    return MatchResult(matches=matches, confident=confident, threshold=threshold, field=field, candidates=len(hits),
                       model_fingerprint=model_fingerprint)
