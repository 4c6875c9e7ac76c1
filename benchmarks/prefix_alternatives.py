"""The principal axes against the other ways to lift a run's short prefixes, on one finished run.

Why: the catalogue recipe's 64-d prefix (0.562) stayed under the base at full width (0.576) through 17 recipes; the
principal axes added after training (``core.training.prefix_axes``) lifted it to 0.616. This script is where the
alternatives measured beside them live, so the figures in docs/finetune-results.md can be re-made:

- ``axes``: the product's step — PCA of the run's corpus and training queries, an orthogonal layer (validation
  decides in the product; here it is always applied so its effect is visible);
- ``learned``: the same orthogonal layer trained (``torch.nn.utils.parametrizations.orthogonal``) with a
  Matryoshka softmax loss over the whole corpus at 256/128/64 d, early-stopped on the validation split;
- ``wise-A``: weight-space interpolation with the base model (WiSE-FT), ``(1 - A) · base + A · run``.

Each row: NDCG@10 per dimension on the run's held-out test split, forgetting at full width (the gate's measure),
and the general set at the smallest width against the base. Give a run trained with ``--no-principal-axes``.

    python benchmarks/prefix_alternatives.py RUN_FOLDER --wise 0.8,0.6,0.5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from _common import cpu_report, cpu_snapshot, machine_line
from sentence_transformers import SentenceTransformer

from core.data.split import split_by_group
from core.data.training_data import group_column_for, load_training_data, retrieval_set_for
from core.embedders import load_embedder
from core.evaluation import compare_results, evaluate_retrieval, evaluate_vectors, load_retrieval_set
from core.training.config import TrainingConfig
from core.training.measure import as_embedder, forgetting_check
from core.training.prefix_axes import add_rotation, principal_axes

DIMS = [384, 256, 128, 64]


def learned_rotation(embedder, train, validation, corpus_ids: list[str], steps: int, lr: float) -> np.ndarray:
    """An orthogonal matrix trained on the run's own vectors (the transformer frozen: one encode serves)."""
    corpus = torch.tensor(embedder.encode_document([train.corpus[i] for i in corpus_ids]))
    position = {item: n for n, item in enumerate(corpus_ids)}
    asked = list(train.queries)
    queries = torch.tensor(embedder.encode_query([train.queries[q] for q in asked]))
    target = torch.zeros(len(asked), len(corpus_ids))
    for row, query in enumerate(asked):
        for item, grade in train.qrels[query].items():
            target[row, position[item]] = grade
    target = target / target.sum(1, keepdim=True).clamp_min(1e-9)
    val_corpus = embedder.encode_document([validation.corpus[i] for i in validation.corpus])
    val_queries = embedder.encode_query([validation.queries[q] for q in validation.queries])
    layer = torch.nn.Linear(corpus.shape[1], corpus.shape[1], bias=False)
    layer.weight.data = torch.eye(corpus.shape[1])
    torch.nn.utils.parametrizations.orthogonal(layer)
    optimiser = torch.optim.Adam(layer.parameters(), lr=lr)

    def validation_score(rotation: np.ndarray) -> float:
        return evaluate_vectors(validation, val_queries @ rotation.T, val_corpus @ rotation.T, dimensions=[64],
                                model_id="validation").metric("ndcg@10", 64)

    best = (validation_score(np.eye(corpus.shape[1], dtype=np.float32)), np.eye(corpus.shape[1], dtype=np.float32))
    for step in range(1, steps + 1):
        loss = torch.zeros(())
        for width in (256, 128, 64):
            q = torch.nn.functional.normalize((queries @ layer.weight.T)[:, :width], dim=1)
            c = torch.nn.functional.normalize((corpus @ layer.weight.T)[:, :width], dim=1)
            loss = loss - (target * torch.log_softmax(20.0 * q @ c.T, dim=1)).sum(1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 10 == 0:
            rotation = layer.weight.detach().numpy().copy()
            if (score := validation_score(rotation)) > best[0]:
                best = (score, rotation)
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run's folder, trained with --no-principal-axes")
    parser.add_argument("--wise", default="0.8,0.6,0.5", help="interpolation weights of the run (empty: none)")
    parser.add_argument("--steps", type=int, default=300, help="learned rotation: optimiser steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="learned rotation: Adam's learning rate")
    args = parser.parse_args()
    print(machine_line())
    before_cpu = cpu_snapshot()
    if any(entry["type"].endswith("Dense") for entry in json.loads(Path(args.run, "modules.json").read_text())):
        raise SystemExit(f"{args.run} already has a Dense layer: train it with --no-principal-axes")
    config = TrainingConfig(**json.loads(Path(args.run, "embtune_run.json").read_text(encoding="utf-8"))["config"])
    data = load_training_data(config.data, data_format=config.data_format, corpus=config.corpus,
                              corpus_text_column=config.corpus_text_column)
    splits = split_by_group(data.frame, group_column_for(data.frame, config.group_by),
                            validation=config.validation_fraction, test=config.test_fraction, seed=config.seed,
                            source=config.data)
    train, validation, test = (retrieval_set_for(frame, data.corpus, name) for frame, name in
                               ((splits.train, "train"), (splits.validation, "validation"), (splits.test, "test")))
    general = load_retrieval_set(config.forgetting_data)
    base = load_embedder(config.model, device="cpu", cache=False)
    base_general = evaluate_retrieval(base, general, dimensions=[384, 64])
    run = SentenceTransformer(args.run, device="cpu")
    embedder = as_embedder(run, "run")
    fit = np.vstack([embedder.encode_document(list(data.corpus.values())),
                     embedder.encode_query(list(dict.fromkeys(splits.train["anchor"])))])
    variants: list[tuple[str, object]] = [("the run", None), ("+ principal axes (PCA)", principal_axes(fit)),
                                          ("+ learned rotation", learned_rotation(embedder, train, validation,
                                                                                  list(data.corpus), args.steps,
                                                                                  args.lr))]
    variants += [(f"WiSE-FT α {alpha}", float(alpha)) for alpha in args.wise.split(",") if alpha.strip()]
    print("\n| model | " + " | ".join(f"NDCG@10 at {d}" for d in DIMS) +
          " | forgetting at 384 (points, 95 % CI) | general set at 64 d, base → model |")
    print("|---|" + "---:|" * len(DIMS) + "---|---|")
    base_state = {k: v.clone() for k, v in base.model.state_dict().items()}
    for name, change in variants:
        model = SentenceTransformer(args.run, device="cpu")
        if isinstance(change, np.ndarray):
            add_rotation(model, change)
        elif isinstance(change, float):
            tuned = model.state_dict()
            model.load_state_dict({k: (1 - change) * base_state[k] + change * v if v.is_floating_point() else v
                                   for k, v in tuned.items()})
        with tempfile.TemporaryDirectory() as folder:  # through a saved folder, as a user would load it
            model.save(folder)
            variant = load_embedder(folder, device="cpu", cache=False)
            scores = evaluate_retrieval(variant, test, dimensions=DIMS)
            kept = forgetting_check(SimpleNamespace(warnings=[]), config, variant, "cpu")
            at_64 = next(c for c in compare_results(base_general, evaluate_retrieval(variant, general,
                                                                                    dimensions=[384, 64]),
                                                    metrics=("ndcg@10",)) if c.dimension == 64)
        print(f"| {name} | " + " | ".join(f"{scores.metric('ndcg@10', d):.4f}" for d in DIMS) +
              f" | {kept['delta'] * 100:+.2f} [{kept['ci_low'] * 100:+.2f}, {kept['ci_high'] * 100:+.2f}]"
              f" | {at_64.mean_a:.3f} → {at_64.mean_b:.3f} ({at_64.delta * 100:+.2f}) |", flush=True)
    print(f"\n# {cpu_report(before_cpu)}")


if __name__ == "__main__":
    main()
