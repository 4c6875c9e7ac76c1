"""Which sentence-transformers loss fits which data format, and building it (Matryoshka-wrapped).

The loss classes are sentence-transformers' own; this module only knows which columns each
one reads, so a mismatch is refused up front with the list of losses that do fit.
"""

from __future__ import annotations

from typing import Any

from core.errors import EmbtuneError

# format → losses that read it (the recipe's first: ``core.training.recipes`` holds the default).
LOSSES_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "pairs": ("mnrl", "cached_mnrl"),
    "triplets": ("mnrl", "cached_mnrl", "triplet"),
    "scored": ("mnrl", "cached_mnrl", "cosent", "cosine_similarity", "contrastive"),
    "classes": ("batch_all_triplet", "batch_hard_triplet", "batch_semi_hard_triplet", "batch_hard_soft_margin_triplet"),
}
# Losses that treat the other texts of a batch as negatives: duplicates in a batch hurt them.
IN_BATCH_NEGATIVE_LOSSES = ("mnrl", "cached_mnrl")


def choose_loss(requested: str, data_format: str) -> str:
    fitting = LOSSES_BY_FORMAT[data_format]
    if requested == "auto":
        from core.training.recipes import recipe_for

        return recipe_for(data_format).loss
    if requested not in fitting:
        raise EmbtuneError(f"loss {requested!r} does not fit {data_format} data; losses that fit: {', '.join(fitting)}")
    return requested


def build_loss(name: str, model: Any, *, matryoshka_dims: list[int], mini_batch_size: int = 32,
               matryoshka_weights: list[float] | None = None, scale: float | None = None) -> Any:
    from sentence_transformers.sentence_transformer import losses

    in_batch = {"scale": scale} if scale else {}
    builders = {
        "mnrl": lambda: losses.MultipleNegativesRankingLoss(model, **in_batch),
        "cached_mnrl": lambda: losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size,
                                                                         **in_batch),
        "cosent": lambda: losses.CoSENTLoss(model),
        "cosine_similarity": lambda: losses.CosineSimilarityLoss(model),
        "triplet": lambda: losses.TripletLoss(model),
        "contrastive": lambda: losses.ContrastiveLoss(model),
        "batch_all_triplet": lambda: losses.BatchAllTripletLoss(model),
        "batch_hard_triplet": lambda: losses.BatchHardTripletLoss(model),
        "batch_semi_hard_triplet": lambda: losses.BatchSemiHardTripletLoss(model),
        "batch_hard_soft_margin_triplet": lambda: losses.BatchHardSoftMarginTripletLoss(model),
    }
    loss = builders[name]()
    if matryoshka_dims:
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(matryoshka_dims),
                                     matryoshka_weights=list(matryoshka_weights) if matryoshka_weights else None)
    return loss
