"""The default recipe per data format: the one place the CLI, the studio and the API read.

A value a user leaves unset in a ``TrainingConfig`` (``None``; ``loss: auto``) comes from the recipe
of the data's format. The figures behind each choice come from ``benchmarks/recipes.py`` (the
table is in docs/finetune-results.md, "Default recipes"): per format, the candidate losses and a
few epochs/learning rates trained on the bundled catalogue and MedQuAD's training file and
measured on their held-out splits, the gate's forgetting check included. A recipe that wins
its own split but fails the forgetting check is not a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MATRYOSHKA_LADDER = (256, 128, 64)
"""Smaller dimensions trained beside the model's own when a recipe uses Matryoshka."""


@dataclass(frozen=True)
class Recipe:
    loss: str
    epochs: float
    learning_rate: float
    batch_size: int
    matryoshka: bool
    augment_typos: int = 0
    loss_scale: float | None = None
    similarity_anchor: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# In-batch negatives (MNRL) beat CoSENT on scored pairs too: the catalogue's CoSENT default lowered
# NDCG@10 0.387 → 0.266, MNRL on the pairs scored relevant raised it. One epoch: two forgot more of the general
# set (−6.24 vs −4.70 points) for a similar domain gain. The loss scale is the model's own (known models say it:
# e5 100, MiniLM 20): at 20, e5 gained 0.872 on MedQuAD dev, at 50 0.918 (docs/finetune-results.md).
# The similarity anchor (core.training.anchor) and no typo variants bring the catalogue run's forgetting from
# −4.70 to −0.84 points (typo variants alone cost ~1.5 of them) with the domain gain kept: 384-d 0.576 → 0.670.
_RETRIEVAL = Recipe(loss="mnrl", epochs=1.0, learning_rate=5e-5, batch_size=32, matryoshka=True, augment_typos=0,
                    similarity_anchor=1000.0)
RECIPES: dict[str, Recipe] = {
    "pairs": _RETRIEVAL,
    "triplets": _RETRIEVAL,
    "scored": _RETRIEVAL,
    "classes": Recipe(loss="batch_all_triplet", epochs=1.0, learning_rate=2e-5, batch_size=32, matryoshka=False),
}


def recipe_for(data_format: str) -> Recipe:
    return RECIPES[data_format]


def matryoshka_dims_for(full_dim: int) -> list[int]:
    """The model's own dimension and the ladder's smaller ones."""
    return [full_dim, *[d for d in MATRYOSHKA_LADDER if d < full_dim]]


def apply_recipe(config: Any, data_format: str) -> Any:
    """``config`` with every value left unset taken from the format's recipe (Matryoshka dimensions
    stay ``None`` here: they need the model's dimension, see :func:`resolve_matryoshka_dims`)."""
    recipe = recipe_for(data_format)
    values = {"loss": recipe.loss if config.loss == "auto" else config.loss,
              "epochs": recipe.epochs if config.epochs is None else config.epochs,
              "learning_rate": recipe.learning_rate if config.learning_rate is None else config.learning_rate,
              "batch_size": recipe.batch_size if config.batch_size is None else config.batch_size,
              "augment_typos": recipe.augment_typos if config.augment_typos is None else config.augment_typos,
              "similarity_anchor": recipe.similarity_anchor if config.similarity_anchor is None else
              config.similarity_anchor,
              "loss_scale": config.loss_scale if config.loss_scale is not None else
              recipe.loss_scale if recipe.loss_scale is not None else model_similarity_scale(config.model)}
    if values["loss"] != recipe.loss and config.augment_typos is None:
        values["augment_typos"] = 0
    return config.replace(**values)


def model_similarity_scale(spec: str) -> float | None:
    """The scale a known model was trained at (e5: 100), None for others (the loss's own 20)."""
    from core.embedders.registry import known_model

    known = known_model(spec)
    return known.similarity_scale if known is not None else None


def resolve_matryoshka_dims(config: Any, data_format: str, full_dim: int) -> list[int]:
    if config.matryoshka_dims is not None:
        return list(config.matryoshka_dims)
    return matryoshka_dims_for(full_dim) if recipe_for(data_format).matryoshka else []
