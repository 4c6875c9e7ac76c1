"""The medical case on real data: Matryoshka fine-tuning on MedQuAD, per-dimension before/after.

Reads ../shared/data/medquad (never copied into the project): 4831 question→answer training
pairs, a dev corpus of 572 answers with 300 queries (train and dev share no focus). Trains
MNRL wrapped in MatryoshkaLoss (384/256/128/64) with NO_DUPLICATES batches and a validation
split grouped by ``focus``, keeps the best epoch by dev-like NDCG@10 at 64 dims, and
evaluates base and tuned models on the dev set with paired intervals. Variants: full
fine-tune, LoRA, CachedMNRL at a larger effective batch. The forgetting check runs on the
bundled catalogue (the out-of-domain set here).

    python benchmarks/medical_matryoshka.py                     # full + lora, 1 epoch each
    python benchmarks/medical_matryoshka.py --variants full,lora,cached --epochs 2
    python benchmarks/medical_matryoshka.py --max-pairs 64 --variants full   # the smoke run make test uses
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pandas as pd

from core.embedders import load_embedder
from core.evaluate import compare_results, comparison_table, evaluate_retrieval, load_retrieval_set
from core.training.config import TrainingConfig
from core.training.train import train

DIMS = [384, 256, 128, 64]
MEDQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "medquad"
VARIANTS = {
    "full": {},
    "lora": {"lora": True, "lora_r": 16, "lora_alpha": 32, "learning_rate": 5e-4},
    "cached": {"loss": "cached_mnrl", "batch_size": 128, "mini_batch_size": 32},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MEDQUAD)
    parser.add_argument("--out", type=Path, default=Path("/tmp/embtune-medical-bench"))
    parser.add_argument("--variants", default="full,lora")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--max-pairs", type=int, default=0, help="use only the first N training pairs (smoke run)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train_file = args.data / "train_pairs.csv"
    if args.max_pairs:
        frame = pd.read_csv(train_file).head(args.max_pairs)
        train_file = args.out / "train_subset.csv"
        frame.to_csv(train_file, index=False)
    dev = load_retrieval_set(args.data, name="medquad-dev")
    if args.max_pairs:
        dev = dev.subset(list(dev.queries)[: max(10, args.max_pairs // 2)])
    base = evaluate_retrieval(load_embedder("default", cache=False), dev, dimensions=DIMS)
    report: dict[str, object] = {"base": base.metrics}
    lines = [f"# MedQuAD dev ({len(dev.queries)} queries, {len(dev.corpus)} answers): base → fine-tuned", ""]
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        config = TrainingConfig(
            data=str(train_file), output_dir=str(args.out / name), matryoshka_dims=DIMS, epochs=args.epochs,
            batch_size=32, learning_rate=2e-5 * 2, max_seq_length=args.max_seq_length, test_fraction=0.0,
            validation_fraction=0.1, group_by="focus", forgetting_data="bundled:catalogue", run_name=name,
            test_data=str(args.data) if not args.max_pairs else None, overwrite=True,
            **{"loss": "mnrl", **VARIANTS[name]},
        )
        started = time.perf_counter()
        run = train(config, show_progress=False)
        seconds = time.perf_counter() - started
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        tuned = evaluate_retrieval(load_embedder(run.output_dir, cache=False, reuse=False), dev, dimensions=DIMS)
        comparisons = compare_results(base, tuned, resamples=2000)
        train_rows = run.split_sizes["train"]
        report[name] = {"metrics": tuned.metrics, "comparisons": [c.to_dict() for c in comparisons],
                        "train_seconds": run.train_seconds, "total_seconds": seconds, "peak_rss_gib": peak_gib,
                        "examples_per_s": train_rows * args.epochs / max(run.train_seconds, 1e-9),
                        "forgetting": run.forgetting, "warnings": run.warnings}
        lines += [f"## base → {name} ({train_rows} training pairs, {args.epochs:g} epoch(s), "
                  f"{run.train_seconds / 60:.1f} min training, {train_rows * args.epochs / run.train_seconds:.1f} "
                  f"examples/s, peak RSS {peak_gib:.1f} GiB of this process so far)", "",
                  comparison_table(comparisons, ("ndcg@10", "ndcg@10_binary", "recall@3")), ""]
        if run.forgetting:
            f = run.forgetting
            lines.append(f"Forgetting on the catalogue: NDCG@10 {f['ndcg@10_before']:.4f} → {f['ndcg@10_after']:.4f} "
                         f"({f['delta'] * 100:+.2f} points)\n")
    text = "\n".join(lines)
    print(text)
    (args.out / "medical_matryoshka.md").write_text(text, encoding="utf-8")
    (args.out / "medical_matryoshka.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
