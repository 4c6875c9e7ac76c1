"""The catalogue case, measured: base vs full fine-tune vs LoRA, and the hard-negative review.

Everything is evaluated on the same held-out test split of the bundled catalogue queries
(grouped by query), with graded and binary NDCG@10 and Recall@3 per Matryoshka dimension,
each delta with its paired bootstrap 95 % interval. Then hard negatives: how many mined
negatives were flagged as too close to the positive, how many a review by the catalogue's
own labels turned into positives, and NDCG@10 of training with and without the flagged ones.

    python benchmarks/catalogue_finetune.py --out docs/results/catalogue   # ~30 min on 2 CPU cores
    python benchmarks/catalogue_finetune.py --parts full --model minilm     # the previous default, full only

It ends with the issue's spot checks on the whole catalogue: where the first right item of a few hard queries
("дымо ход" must find a chimney item) ranks under the base and under the fine-tuned model.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from core.data.augment import load_reviewed_negatives, save_reviewed_negatives
from core.data.bundled import CATALOGUE_QUERIES, catalogue_corpus
from core.data.formats import read_table
from core.embedders import load_embedder
from core.evaluation import compare_results, comparison_table, evaluate_retrieval, regressions
from core.training.config import TrainingConfig
from core.training.train import train

DIMS = [384, 256, 128, 64]
# (query, what a right answer's category is) for the spot checks on the whole catalogue.
SPOT_CHECKS = [("дымо ход", "chimneys_stoves"), ("шуруповерт акамуляторный", "power_tools"),
               ("cordles dril", "power_tools"), ("chimney pipe", "chimneys_stoves")]


def base_config(out: Path, name: str, **overrides: object) -> TrainingConfig:
    values: dict[str, object] = {
        "data": "bundled:catalogue", "output_dir": str(out / name), "loss": "mnrl", "matryoshka_dims": DIMS,
        "epochs": 4, "batch_size": 32, "learning_rate": 1e-4, "max_seq_length": 64, "run_name": name,
        "overwrite": True,
    }
    values.update(overrides)
    return TrainingConfig(**values)


def test_set_of(config: TrainingConfig):
    """Rebuild the test split exactly as train() does (same data, grouping and seed)."""
    from core.data.split import split_by_group
    from core.data.training_data import group_column_for, load_training_data, retrieval_set_for

    data = load_training_data(config.data)
    splits = split_by_group(data.frame, group_column_for(data.frame), validation=config.validation_fraction,
                            test=config.test_fraction, seed=config.seed)
    return retrieval_set_for(splits.test, data.corpus, "catalogue-test")


def review_by_labels(folder: Path) -> dict[str, int]:
    """Play the reviewer with the catalogue's labels: labelled at all → relevant, else not relevant."""
    labels = read_table(CATALOGUE_QUERIES)
    ids_by_text = {text: item_id for item_id, text in catalogue_corpus().items()}
    judged = {(row.query, row.item_id): float(row.score) for row in labels.itertuples(index=False)}
    mined = load_reviewed_negatives(str(folder))
    reviewed = []
    for m in mined:
        if not m.flag:
            reviewed.append(m)
            continue
        labelled = judged.get((m.anchor, ids_by_text.get(m.negative)), 0.0) > 0
        reviewed.append(replace(m, review="relevant" if labelled else "not_relevant"))
    save_reviewed_negatives(str(folder), reviewed)
    return {"mined": len(mined), "flagged": sum(1 for m in mined if m.flag),
            "flagged_close": sum(1 for m in mined if m.flag == "close_to_positive"),
            "turned_positive": sum(1 for m in reviewed if m.review == "relevant"),
            "confirmed_negative": sum(1 for m in reviewed if m.review == "not_relevant")}


def spot_checks(base_spec: str, tuned_folder: str) -> list[dict[str, object]]:
    """Rank (1-based) of the first item of the right category for each spot-check query, over the whole catalogue."""
    import numpy as np

    frame = read_table(CATALOGUE_QUERIES.parent / "products.csv")
    texts, categories = frame["name"].tolist(), frame["category"].tolist()
    rows = []
    ranks: dict[str, list[int]] = {}
    tops: list[str] = []
    for label, spec in (("base", base_spec), ("tuned", tuned_folder)):
        embedder = load_embedder(spec, cache=False, reuse=False)
        items = embedder.encode_document(texts)
        for query, _ in SPOT_CHECKS:
            order = np.argsort(-(items @ embedder.encode_query(query)))
            ranks.setdefault(query, []).append(next(r for r, i in enumerate(order, 1)
                                                    if categories[i] == dict(SPOT_CHECKS)[query]))
            if label == "tuned":
                tops.append(" | ".join(texts[i][:40] for i in order[:3]))
    for (query, _), top in zip(SPOT_CHECKS, tops, strict=True):
        rows.append({"query": query, "base": ranks[query][0], "tuned": ranks[query][1], "tuned_top3": top})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/embtune-catalogue-bench"))
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--parts", default="main,weighted,negatives",
                        help="main (full + LoRA), weighted (full with Matryoshka weights favouring small dims), "
                             "negatives (hard-negative review)")
    parser.add_argument("--weights", default="1,1,2,4", help="Matryoshka weights for 384,256,128,64 (weighted part)")
    parser.add_argument("--model", default="default", help="the base model (default: multilingual-e5-small)")
    args = parser.parse_args()
    parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {}

    full_cfg = base_config(args.out, "full", epochs=args.epochs, augment_typos=1, model=args.model)
    lora_cfg = base_config(args.out, "lora", epochs=args.epochs, lora=True, lora_r=16, lora_alpha=32,
                           learning_rate=1e-3, model=args.model)
    weights = [float(w) for w in args.weights.split(",")]
    weighted_cfg = base_config(args.out, "weighted", epochs=args.epochs, augment_typos=1, matryoshka_weights=weights,
                               model=args.model)
    test = test_set_of(full_cfg)
    base = evaluate_retrieval(load_embedder(args.model, cache=False), test, dimensions=DIMS)
    results = {"base": base}
    configs = ([full_cfg, lora_cfg] if "main" in parts else [full_cfg] if "full" in parts else []) + (
        [weighted_cfg] if "weighted" in parts else [])
    for cfg in configs:
        started = time.perf_counter()
        run = train(cfg, show_progress=False)
        tuned = evaluate_retrieval(load_embedder(run.output_dir, cache=False, reuse=False), test, dimensions=DIMS)
        results[cfg.run_name] = tuned
        report[cfg.run_name] = {"seconds": round(time.perf_counter() - started), "forgetting": run.forgetting,
                                "by_kind_recall@3": run.by_kind, "warnings": run.warnings}
    lines = [f"# Catalogue fine-tuning (test split: {len(test.queries)} queries, {len(test.corpus)} items)", ""]
    for name in [cfg.run_name for cfg in configs]:
        comparisons = compare_results(base, results[name], resamples=2000)
        report[f"{name}_vs_base"] = [c.to_dict() for c in comparisons]
        title = f"base → {name}" + (f" (Matryoshka weights {weights} for {DIMS})" if name == "weighted" else "")
        lines += [f"## {title}", "", comparison_table(comparisons, ("ndcg@10", "ndcg@10_binary", "recall@3")),
                  ""]
        by_kind = report[name]["by_kind_recall@3"]
        if by_kind:
            lines += ["| kind | recall@3 base | recall@3 " + name + " |", "|---|---|---|"]
            lines += [f"| {k} | {v:.3f} | {by_kind['after'].get(k, 0):.3f} |" for k, v in by_kind["before"].items()]
            lines.append("")
        f = report[name]["forgetting"]
        if f:
            lines.append(f"Forgetting ({f['data']}): NDCG@10 {f['ndcg@10_before']:.4f} → {f['ndcg@10_after']:.4f} "
                         f"({f['delta'] * 100:+.2f} points); training {report[name]['seconds']} s\n")
    if "main" in parts:
        comparisons = compare_results(results["lora"], results["full"], resamples=2000)
        lines += ["## lora → full", "", comparison_table(comparisons, ("ndcg@10", "recall@3"), "lora", "full"), ""]
    tuned_name = "full" if parts & {"main", "full"} else ("weighted" if "weighted" in parts else "")
    if tuned_name:
        report["spot_checks"] = spot_checks(args.model, str(args.out / tuned_name))
        lines += [f"## Spot checks on the whole catalogue ({len(catalogue_corpus())} items): rank of the first "
                  f"right item, base → {tuned_name}", ""]
        lines += [f"- `{row['query']}`: {row['base']} → {row['tuned']} (tuned top-3: {row['tuned_top3']})"
                  for row in report["spot_checks"]]
        lines.append("")
    if tuned_name:
        worst = regressions(base, results[tuned_name], test, limit=5)
        report["worst_regressions"] = [r.to_dict() for r in worst]
        lines += [f"## 5 worst regressions (base → {tuned_name}, NDCG@10 at 384)", ""]
        for r in worst:
            moves = ", ".join(f"{item} {a or '-'}→{b or '-'}" for item, (a, b) in r.relevant_moves.items())
            lines.append(f"- `{r.query}`: {r.value_a:.3f} → {r.value_b:.3f}; relevant ranks {moves}; "
                         f"base top-3 {[i for i, _ in r.top_a[:3]]}, tuned top-3 {[i for i, _ in r.top_b[:3]]}")
        lines.append("")

    if "negatives" in parts:
        neg_epochs = max(1.0, args.epochs / 2)
        clean = train(base_config(args.out, "hn-clean", epochs=neg_epochs, hard_negatives=3), show_progress=False)
        review = review_by_labels(Path(clean.output_dir))
        flagged = train(base_config(args.out, "hn-flagged", epochs=neg_epochs, hard_negatives=3,
                                    use_flagged_negatives=True), show_progress=False)
        reviewed = train(base_config(args.out, "hn-reviewed", epochs=neg_epochs,
                                     negatives_file=str(Path(clean.output_dir))), show_progress=False)
        rows = []
        for name, run in (("unflagged only (default)", clean), ("flagged included", flagged),
                          ("after review", reviewed)):
            evaluation = evaluate_retrieval(load_embedder(run.output_dir, cache=False, reuse=False), test,
                                            dimensions=DIMS)
            rows.append((name, evaluation))
        report["hard_negatives"] = {"review": review, **{name: e.metrics for name, e in rows}}
        lines += ["## Hard negatives (3 per pair, margin 5 %, reviewed by the catalogue's labels)", "",
                  f"mined {review['mined']}, flagged {review['flagged']} "
                  f"(too close to the positive: {review['flagged_close']}); the review turned "
                  f"{review['turned_positive']} into positives and confirmed {review['confirmed_negative']} "
                  "as negatives.", "",
                  "| training | NDCG@10 384 | NDCG@10 64 | Δ vs unflagged at 384 [95% CI] |", "|---|---|---|---|"]
        for name, evaluation in rows:
            delta = compare_results(rows[0][1], evaluation, metrics=("ndcg@10",))[0]
            lines.append(f"| {name} | {evaluation.metric('ndcg@10', 384):.4f} | {evaluation.metric('ndcg@10', 64):.4f}"
                         f" | {delta.delta:+.4f} [{delta.ci_low:+.4f}, {delta.ci_high:+.4f}] |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    (args.out / "catalogue_finetune.md").write_text(text, encoding="utf-8")
    (args.out / "catalogue_finetune.json").write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str),
                                                      encoding="utf-8")


if __name__ == "__main__":
    main()
