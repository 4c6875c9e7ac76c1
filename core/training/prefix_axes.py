"""Principal axes for the Matryoshka prefixes, after training.

One epoch of the Matryoshka loss leaves a model whose first 64 values still carry much less than they could:
the catalogue recipe's 64-d prefix reached 0.562 NDCG@10 on its test split, the full width 0.670. An orthogonal
layer that turns the output onto the principal axes of the domain's own texts (its corpus and training queries)
puts the directions the domain varies along first, so a cut vector keeps them (0.562 → 0.616 on the same split,
docs/finetune-results.md, session 13). Being orthogonal it changes no full-width cosine: what training did at
full width — the before/after there and the forgetting check — is exactly what it was. Fitted after training, not
before: a rotation set before the run is undone by it (session 10). It is kept only when the validation split's
metric at the smallest dimension does not fall, so it can never make the run worse where the run is judged.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from core.evaluation import RetrievalSet, evaluate_vectors


@dataclass
class PrefixAxesOutcome:
    kept: bool
    reason: str
    dimension: int | None = None
    validation_before: float | None = None
    validation_after: float | None = None
    fit_texts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def principal_axes(vectors: np.ndarray) -> np.ndarray:
    """Rows: an orthonormal basis of the whole space, by decreasing variance of ``vectors`` along each row."""
    from scipy.linalg import null_space
    from sklearn.decomposition import PCA

    components = PCA(n_components=min(vectors.shape)).fit(vectors).components_
    if len(components) < vectors.shape[1]:  # fewer texts than dimensions: complete the basis, order beyond is moot
        components = np.vstack([components, null_space(components).T])
    return components.astype(np.float32)


def add_rotation(model: Any, rotation: np.ndarray) -> None:
    """Insert a bias-free linear layer (``rotation`` @ vector) before the model's Normalize, in place; saved and
    loaded as a plain sentence-transformers Dense module."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    size = rotation.shape[0]
    dense = Dense(size, size, bias=False, activation_function=torch.nn.Identity())
    parameter = next(model.parameters())
    dense.linear.weight.data = torch.as_tensor(rotation).to(device=parameter.device, dtype=torch.float32)
    modules = list(model._modules.values())
    at = next((n for n, module in enumerate(modules) if isinstance(module, Normalize)), len(modules))
    reordered = [*modules[:at], dense, *modules[at:]]
    model._modules.clear()
    model._modules.update(OrderedDict((str(n), module) for n, module in enumerate(reordered)))


def align_prefixes(model: Any, embedder: Any, *, queries: list[str], validation: RetrievalSet | None,
                   dimension: int) -> PrefixAxesOutcome:
    """Fit the domain's principal axes with the trained model (its corpus — the validation split searches the
    whole of it — and training queries) and add them when validation does not fall."""
    if validation is None:  # a RetrievalSet always has judged queries: None is the only empty split
        return PrefixAxesOutcome(False, "no validation split to judge the axes on")
    corpus = embedder.encode_document([validation.corpus[i] for i in validation.corpus])
    asked = embedder.encode_query([validation.queries[q] for q in validation.queries])
    fit = np.vstack([corpus, embedder.encode_query(queries)]) if queries else corpus
    rotation = principal_axes(fit)
    # The model's output is unit length, and an orthogonal layer before Normalize keeps it so: the rotated
    # model's vectors are the rotation of these, and one encode scores both.
    metric = f"NDCG@10 at {dimension} d"
    before, after = (evaluate_vectors(validation, asked @ turn.T, corpus @ turn.T, dimensions=[dimension],
                                      model_id="validation").metric("ndcg@10", dimension)
                     for turn in (np.eye(len(rotation), dtype=np.float32), rotation))
    kept = after >= before
    if kept:
        add_rotation(model, rotation)
        reason = f"principal axes kept: validation {metric} {before:.4f} → {after:.4f}"
    else:
        reason = f"principal axes not kept: validation {metric} would fall {before:.4f} → {after:.4f}"
    return PrefixAxesOutcome(kept, reason, dimension, before, after, len(fit))
