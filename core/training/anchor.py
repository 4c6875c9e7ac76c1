"""The similarity anchor: a second training objective that keeps what the base model knew.

A domain loss alone moves the whole embedding space, and search outside the domain pays for it
(a catalogue run lost 2.7–4.7 NDCG points on the general set). The anchor holds the base model's
cosine between pairs of corpus items — each item with its nearest neighbours (the pairs ranking
depends on) and a few random ones (the global layout) — through sentence-transformers'
``CosineSimilarityLoss``, trained beside the domain loss on its own batches. Cosines survive any
rotation of the space, so the Matryoshka loss may still move information into the leading
dimensions. It reads only the corpus the user gave, never the held-out forgetting set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

NEAREST = 3
"""Neighbours per item whose base cosine is kept (the close pairs a ranking depends on)."""
RANDOM = 2
"""Random partners per item (the layout at large)."""
MIN_ANCHOR_ROWS = 5_000
"""Anchor rows always allowed, however few domain rows a run has."""


def stored_vectors(collection: str | None, db: Any, model: Any) -> dict[str, np.ndarray]:
    """Text → vector of the collection a run trains for, when that collection was embedded by this very model
    (same weights fingerprint): the anchor then reads the base vectors instead of embedding the corpus again
    (seconds of a run's start, e.g. on the studio's bundled catalogue). Empty when it cannot tell."""
    from core.collection import Collection
    from core.embedders.text import weights_fingerprint

    record = db.get_collection(collection) if collection and db is not None else None
    if record is None or record.model_fingerprint != weights_fingerprint(model):
        return {}
    try:
        stored = Collection.load(record.path)
    except Exception:  # a moved or broken folder: embed as usual
        return {}
    texts = [stored.item(item_id)["text"] for item_id in stored.ids]
    return {text: vector for text, vector in zip(texts, stored.vectors, strict=True) if text}


def anchored_items(unique_texts: int, max_pairs: int | None) -> int:
    """How many corpus items the anchor pairs (each with ``NEAREST + RANDOM`` partners): all of them, or a sample
    when that would exceed ``max_pairs``; 0 when there are too few to pair."""
    count = unique_texts
    if max_pairs is not None and count * (NEAREST + RANDOM) > max_pairs:
        count = min(count, max(NEAREST + 2, max_pairs // (NEAREST + RANDOM)))
    return count if count >= NEAREST + 2 else 0


def anchor_row_count(unique_texts: int, domain_rows: int) -> int:
    """The rows :func:`with_anchor` adds beside ``domain_rows`` (what a run's step count is planned from)."""
    return anchored_items(unique_texts, max(domain_rows, MIN_ANCHOR_ROWS)) * (NEAREST + RANDOM)


def anchor_dataset(model: Any, texts: Sequence[str], *, seed: int = 0, batch_size: int = 64,
                   max_pairs: int | None = None, known: dict[str, np.ndarray] | None = None) -> Any:
    """Pairs of corpus items with the base model's cosine as label (columns ``item_a``, ``item_b``, ``score``);
    with ``max_pairs``, a seeded sample of the items, so the anchor adds at most that many rows."""
    import datasets

    unique = unique_texts(texts)
    size = anchored_items(len(unique), max_pairs)
    if size == 0:
        return None
    if size < len(unique):
        keep = np.random.default_rng(seed).choice(len(unique), size=size, replace=False)
        unique = [unique[i] for i in sorted(keep)]
    if known and all(text in known for text in unique):
        vectors = np.stack([known[text] for text in unique]).astype(np.float32)
    else:
        vectors = np.asarray(model.encode(unique, prompt=_document_prompt(model) or None, batch_size=batch_size,
                                          normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False),
                             dtype=np.float32)
    cosines = vectors @ vectors.T
    np.fill_diagonal(cosines, -np.inf)
    nearest = np.argsort(-cosines, axis=1)[:, :NEAREST]
    rng = np.random.default_rng(seed)
    first, second = [], []
    for row in range(len(unique)):
        partners = set(nearest[row].tolist())
        while len(partners) < NEAREST + RANDOM:
            partner = int(rng.integers(len(unique)))
            if partner != row:
                partners.add(partner)
        for partner in sorted(partners):
            first.append(row)
            second.append(partner)
    np.fill_diagonal(cosines, 1.0)
    return datasets.Dataset.from_dict({"item_a": [unique[i] for i in first], "item_b": [unique[j] for j in second],
                                       "score": cosines[first, second].astype(float).tolist()})


def unique_texts(texts: Sequence[str]) -> list[str]:
    """The corpus texts the anchor can pair: non-empty, each once, in order."""
    return list(dict.fromkeys(t for t in texts if t and t.strip()))


def anchor_loss(model: Any, weight: float) -> Any:
    """sentence-transformers' cosine loss with its MSE times ``weight``: cosine errors are small numbers next
    to an in-batch loss of ~5, so unweighted the anchor would barely pull."""
    import torch
    from sentence_transformers.sentence_transformer import losses

    class WeightedMSE(torch.nn.MSELoss):
        def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return weight * super().forward(predicted, target)

    return losses.CosineSimilarityLoss(model, loss_fct=WeightedMSE())


def anchor_prompts(model: Any) -> dict[str, str]:
    """Both columns are corpus items: the model's document prompt, as indexing applies it."""
    prompt = _document_prompt(model)
    return {"item_a": prompt, "item_b": prompt} if prompt else {}


def _document_prompt(model: Any) -> str:
    return (getattr(model, "prompts", None) or {}).get("document") or ""


def with_anchor(model: Any, dataset: Any, loss: Any, prompts: dict[str, str], texts: Sequence[str], *, weight: float,
                seed: int, known: dict[str, np.ndarray] | None = None) -> tuple[Any, Any, dict[str, str]]:
    """The trainer's datasets, losses and prompts with the anchor beside the domain loss (unchanged when
    the weight is 0 or the corpus is too small to pair)."""
    # A large corpus is sampled down to as many anchor rows as domain rows (the anchor at most doubles a run's
    # steps); a catalogue-sized one (≤ MIN_ANCHOR_ROWS rows) is anchored whole.
    limit = max(len(dataset), MIN_ANCHOR_ROWS)
    anchor = anchor_dataset(model, texts, seed=seed, max_pairs=limit, known=known) if weight > 0 else None
    if anchor is None:
        return dataset, loss, prompts
    return ({"domain": dataset, "anchor": anchor}, {"domain": loss, "anchor": anchor_loss(model, weight)},
            {**prompts, **anchor_prompts(model)})
