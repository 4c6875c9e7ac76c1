"""A second stage after a Matryoshka run: the tuned model's short prefixes learn its own full-width ranking.

Why: on the bundled catalogue the recipe's tuned model is 0.670 NDCG@10 at 384 d but 0.562 at 64 d, under the
base's 0.576 at 384 d (issue 21), and every first-stage lever that lifted the 64-d figure also raised forgetting.
Here the tuned model is its own teacher: for each training query, its full-width similarities to the corpus items
it ranks highest (plus random ones) are the target of the same query's similarities at 256, 128 and 64 dimensions
(``kl``: listwise, softmax at the model's temperature; ``mse``: in-batch cosine matrices), with the full width held
to itself so search at 384 d and outside the domain stay where the first stage left them. It reads the run's own
training split and corpus only. Prints NDCG@10 per dimension on the run's held-out test split, teacher vs student,
and forgetting on the run's general set for both.

    python benchmarks/prefix_distillation.py RUN_FOLDER --loss kl --lr 3e-5 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from _common import cpu_report, cpu_snapshot, machine_line
from sentence_transformers import SentenceTransformer

from core.data.split import split_by_group
from core.data.training_data import group_column_for, load_training_data, retrieval_set_for
from core.evaluation import evaluate_retrieval
from core.training.config import TrainingConfig
from core.training.measure import as_embedder, forgetting_check

PREFIXES = (256, 128, 64)


def similarity_loss(kind: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    if kind == "mse":
        return torch.nn.functional.mse_loss(student, teacher)
    return torch.nn.functional.kl_div(torch.log_softmax(student / temperature, -1),
                                      torch.softmax(teacher / temperature, -1), reduction="batchmean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run's output folder (its embtune_run.json gives data and splits)")
    parser.add_argument("--loss", choices=("kl", "mse"), default="kl")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--queries-per-batch", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.01, help="kl: e5 was trained at scale 100")
    args = parser.parse_args()
    print(machine_line())
    before = cpu_snapshot()
    record = json.loads(Path(args.run, "embtune_run.json").read_text(encoding="utf-8"))
    config = TrainingConfig(**record["config"])
    data = load_training_data(config.data, data_format=config.data_format, corpus=config.corpus,
                              corpus_text_column=config.corpus_text_column)
    splits = split_by_group(data.frame, group_column_for(data.frame, config.group_by),
                            validation=config.validation_fraction, test=config.test_fraction, seed=config.seed,
                            source=config.data)
    torch.manual_seed(0)
    teacher, student = SentenceTransformer(args.run, device="cpu"), SentenceTransformer(args.run, device="cpu")
    prompts = teacher.prompts or {}
    documents = [prompts.get("document", "") + text for text in data.corpus.values()]
    queries = [prompts.get("query", "") + text for text in dict.fromkeys(splits.train.iloc[:, 0].astype(str))]
    texts = documents + queries
    with torch.no_grad():
        targets = torch.tensor(teacher.encode(texts, normalize_embeddings=True, batch_size=64))
    n_docs, rng = len(documents), np.random.default_rng(0)
    query_rows = np.arange(n_docs, len(texts))
    nearest = torch.topk(targets[query_rows] @ targets[:n_docs].T, 3, dim=1).indices.numpy()
    optimiser = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    student.train()
    started = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(query_rows))
        for start in range(0, len(order), args.queries_per_batch):
            chosen = order[start:start + args.queries_per_batch]
            rows = [int(query_rows[i]) for i in chosen]
            docs = list(dict.fromkeys(int(d) for i in chosen for d in nearest[i]))
            docs += [int(d) for d in rng.choice(n_docs, args.queries_per_batch, replace=False) if int(d) not in docs]
            out = student(student.tokenize([texts[i] for i in rows + docs]))["sentence_embedding"]
            target = targets[rows] @ targets[docs].T
            loss = 0.0
            for width in (out.shape[1], *PREFIXES):
                part = torch.nn.functional.normalize(out[:, :width], dim=-1)
                loss = loss + similarity_loss(args.loss, part[:len(rows)] @ part[len(rows):].T, target,
                                              args.temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch + 1}: loss {float(loss.detach()):.4f}, {time.perf_counter() - started:.0f} s", flush=True)
    student.eval()
    test = retrieval_set_for(splits.test, data.corpus, "test")
    widths = [teacher.get_embedding_dimension(), *PREFIXES]
    print("\n| model | " + " | ".join(f"NDCG@10 at {w}" for w in widths) + " | forgetting (points, 95 % CI) |")
    print("|---|" + "---:|" * len(widths) + "---|")
    for name, model in (("first stage (teacher)", teacher), ("+ prefix distillation", student)):
        embedder = as_embedder(model, name)
        scores = evaluate_retrieval(embedder, test, dimensions=widths).metrics
        kept = forgetting_check(SimpleNamespace(warnings=[]), config, embedder, "cpu")  # the gate's own measure
        print(f"| {name} | " + " | ".join(f"{scores[f'dim_{w}_ndcg@10']:.4f}" for w in widths) +
              f" | {kept['delta'] * 100:+.2f} [{kept['ci_low'] * 100:+.2f}, {kept['ci_high'] * 100:+.2f}] |")
    print(f"\n# {cpu_report(before)}")


if __name__ == "__main__":
    main()
