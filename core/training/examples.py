"""The rows a run trains on: its training split plus typo variants and mined hard negatives.

Typo variants teach the misspellings users type; mined negatives (found with the base model, those
too close to the positive flagged and left out unless reviewed) sharpen in-batch losses. Rows with
no usable negative still train, with a random corpus item standing in.
"""

from __future__ import annotations

import random
from typing import Any

import pandas as pd

from core.errors import EmbtuneError
from core.training.config import TrainingConfig
from core.training.losses import IN_BATCH_NEGATIVE_LOSSES


def augmented_training_frame(frame: Any, corpus: dict[str, str], config: TrainingConfig, model: Any,
                             loss_name: str) -> tuple[Any, list[Any]]:
    """The training split with typo variants and (usable) mined negatives added, as configured."""
    from core.data.augment import augment_with_typos, load_reviewed_negatives, mine_negatives, negatives_frame

    frame = augment_with_typos(frame, config.augment_typos, seed=config.seed)
    if not (config.hard_negatives or config.negatives_file):
        return frame, []
    if loss_name not in IN_BATCH_NEGATIVE_LOSSES:
        raise EmbtuneError(f"hard negatives need an mnrl loss (got {loss_name})")
    if "score" in frame.columns:
        frame = frame[frame["score"].astype(float) >= config.relevance_threshold]
    if config.negatives_file:
        mined = load_reviewed_negatives(config.negatives_file)
    else:
        mined = mine_negatives(model, frame, list(corpus.values()), num_negatives=config.hard_negatives,
                               relative_margin=config.negative_margin, relevance_threshold=config.relevance_threshold)
    triplets = negatives_frame(mined, include_flagged=config.use_flagged_negatives)
    confirmed = [m for m in mined if m.review == "relevant"]  # a reviewer found a right answer: train on it
    extra_positives = [{"anchor": m.anchor, "positive": m.negative} for m in confirmed]
    pairs = frame[["anchor", "positive"]].drop_duplicates()
    if extra_positives:
        pairs = pd.concat([pairs, pd.DataFrame(extra_positives)], ignore_index=True)
    covered = set(zip(triplets["anchor"], triplets["positive"], strict=True))
    uncovered = pairs[[(a, p) not in covered for a, p in zip(pairs["anchor"], pairs["positive"], strict=True)]]
    # Rows with no usable negative still train; a random corpus item stands in as their negative.
    rng = random.Random(config.seed)
    relevant = frame.groupby("anchor")["positive"].agg(set).to_dict()
    texts = list(corpus.values())
    fillers = []
    for anchor, positive in uncovered.itertuples(index=False):
        candidates = [t for t in rng.sample(texts, min(len(texts), 20)) if t not in relevant.get(anchor, set())
                      and t != positive]
        if candidates:
            fillers.append({"anchor": anchor, "positive": positive, "negative": candidates[0]})
    return pd.concat([triplets, pd.DataFrame(fillers)], ignore_index=True), mined
