"""The medical case on real data: Matryoshka fine-tuning on MedQuAD, per-dimension before/after.

Reads ../shared/data/medquad (never copied into the project): 4831 question→answer training
pairs, a dev corpus of 572 answers with 300 queries (train and dev share no focus). Trains
MNRL wrapped in MatryoshkaLoss (384/256/128/64) with NO_DUPLICATES batches and a validation
split grouped by ``focus`` (the best epoch is kept by validation NDCG@10 at 64 dims: choosing it
on dev would report a number the dev set itself picked), and evaluates base and tuned models on
the dev set with paired intervals. Variants: full fine-tune, LoRA, CachedMNRL at a larger
effective batch, and the full fine-tune again under ``torchrun`` (2 CPU processes, gloo).

Each training runs as its own ``embtune train CONFIG.json`` process (the command a user runs),
so its wall time and peak memory (the whole process tree, sampled) are its own. The forgetting
check runs on the bundled catalogue (the out-of-domain set here).

    python benchmarks/medical_matryoshka.py                                  # full + lora, 1 epoch each
    python benchmarks/medical_matryoshka.py --variants full,lora,cached,torchrun
    python benchmarks/medical_matryoshka.py --max-pairs 32 --dev-queries 8 --forgetting-data bundled:general  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from core.embedders import load_embedder
from core.evaluation import (
    EvaluationResult,
    RetrievalSet,
    compare_results,
    comparison_table,
    evaluate_retrieval,
    load_retrieval_set,
    regressions,
)
from core.training.config import TrainingConfig
from core.training.train import RUN_FILE

DIMS = [384, 256, 128, 64]
MEDQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "medquad"
VARIANTS = {
    "full": {},
    "plain": {"similarity_anchor": 0.0},  # "full" as sessions 2-3 ran it, before the recipe's similarity anchor
    "lora": {"lora": True, "lora_r": 16, "lora_alpha": 32, "learning_rate": 5e-4},
    "cached": {"loss": "cached_mnrl", "batch_size": 128, "mini_batch_size": 32},
    "cached-s50": {"loss": "cached_mnrl", "batch_size": 128, "mini_batch_size": 32, "loss_scale": 50.0},
    "torchrun": {},  # the full fine-tune, launched as 2 processes
    "recipe": {},  # the pairs recipe exactly as `embtune train` resolves it with no flags (core.training.recipes)
    "recipe-lr7e-5": {"learning_rate": 7e-5},  # recipe-*: the recipe with the values given here changed
    "recipe-lr1e-4": {"learning_rate": 1e-4},
    "recipe-lr7e-5-w64": {"learning_rate": 7e-5, "matryoshka_dims": DIMS, "matryoshka_weights": [1, 1, 1, 2]},
}


def small_dev(dev: RetrievalSet, queries: int) -> RetrievalSet:
    """The first ``queries`` dev queries against their answers plus as many others (a quick smoke set)."""
    chosen = dev.subset(list(dev.queries)[:queries])
    relevant = {item for qrel in chosen.qrels.values() for item in qrel}
    others = [item for item in dev.corpus if item not in relevant][: max(len(relevant), 20)]
    corpus = {item: dev.corpus[item] for item in [*relevant, *others]}
    return RetrievalSet(chosen.name, chosen.queries, corpus, chosen.qrels, chosen.query_kinds)


def run_process(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """Run ``command``; its wall seconds, peak summed RSS (GiB) and CPU seconds of its process tree.

    CPU seconds are reported beside wall time because this 2-core machine is often shared:
    CPU time / cores is what the same run takes when nothing else is running.
    """
    import psutil

    started = time.perf_counter()
    peak = 0
    cpu: dict[int, float] = {}
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                rss = 0
                for member in tree:
                    with member.oneshot():
                        rss += member.memory_info().rss
                        times = member.cpu_times()
                        cpu[member.pid] = times.user + times.system
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.5)
    seconds = time.perf_counter() - started
    if process.returncode not in (0, 3):  # 3: the gate rejected the run, which still trained and was measured
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise SystemExit(f"training failed ({' '.join(command)}), log {log}:\n{tail}")
    return seconds, peak / 2**30, sum(cpu.values())


def paired_section(title: str, label_a: str, a: EvaluationResult, label_b: str, b: EvaluationResult) -> list[str]:
    """Two fine-tunes on the same dev queries: NDCG@10 per dimension, the difference paired per query."""
    comparisons = compare_results(a, b, metrics=("ndcg@10",), resamples=2000)
    return [f"## {title}", "", comparison_table(comparisons, ("ndcg@10",), label_a, label_b), ""]


def train_variant(name: str, train_file: Path, args: argparse.Namespace) -> tuple[dict, float, float, float]:
    """Write the variant's TrainingConfig, train it in a fresh process, return its run record."""
    if name.startswith("recipe"):  # loss, scale, anchor, epochs, lr, batch and dimensions: the recipe's
        settings: dict = {"loss": "auto", "matryoshka_dims": None, "epochs": None, "batch_size": None,
                          "learning_rate": None, **VARIANTS[name]}
    else:
        settings = {"loss": "mnrl", "matryoshka_dims": DIMS, "epochs": args.epochs, "batch_size": 32,
                    "learning_rate": 4e-5, **VARIANTS[name]}
    config = TrainingConfig(
        model=args.model, data=str(train_file), output_dir=str(args.out / name), max_seq_length=args.max_seq_length,
        test_fraction=0.0, validation_fraction=0.1, group_by="focus", forgetting_data=args.forgetting_data,
        run_name=name, test_data=str(args.dev_folder), overwrite=True, device="cpu", **settings,
    )
    config_file = args.out / f"{name}.json"
    config_file.write_text(json.dumps(config.to_dict(), indent=2), encoding="utf-8")
    env = {**os.environ, "EMBTUNE_HOME": str(args.out / "workspace"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    launcher = [sys.executable, "-m", "embtune"]
    if name == "torchrun":
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 2) // 2))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "embtune"]
    seconds, peak_gib, cpu_seconds = run_process([*launcher, "train", str(config_file)], env,
                                                 args.out / f"{name}.log")
    record = json.loads((args.out / name / RUN_FILE).read_text(encoding="utf-8"))
    return record["result"], seconds, peak_gib, cpu_seconds


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MEDQUAD)
    parser.add_argument("--out", type=Path, default=Path("/tmp/embtune-medical-bench"))
    parser.add_argument("--variants", default="full,lora", help=f"comma separated: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--model", default="default", help="the base model every variant starts from (e.g. minilm)")
    parser.add_argument("--compare-with", type=Path, default=None,
                        help="another fine-tuned model folder: each variant is compared with it, paired per query")
    parser.add_argument("--max-seq-length", type=int, default=128,
                        help="answers average ~790 characters; 128 tokens keeps an epoch near 5 min on 2 cores")
    parser.add_argument("--max-pairs", type=int, default=0, help="use only the first N training pairs (smoke run)")
    parser.add_argument("--dev-queries", type=int, default=0,
                        help="use only the first N dev queries, against their answers and as many others (smoke)")
    parser.add_argument("--forgetting-data", default="bundled:catalogue",
                        help="the out-of-domain set for the forgetting check (the smoke test uses bundled:general)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="do not train: evaluate the variants' models an earlier run left in --out")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}: choose from {', '.join(VARIANTS)}")
    train_file = args.data / "train_pairs.csv"
    if args.max_pairs:
        train_file = args.out / "train_subset.csv"
        pd.read_csv(args.data / "train_pairs.csv").head(args.max_pairs).to_csv(train_file, index=False)
    dev = load_retrieval_set(args.data, name="medquad-dev")
    args.dev_folder = args.data
    if args.dev_queries:
        dev = small_dev(dev, args.dev_queries)
        args.dev_folder = args.out / "dev"
        dev.write_folder(args.dev_folder)
    base = evaluate_retrieval(load_embedder(args.model, cache=False), dev, dimensions=DIMS)
    report: dict[str, object] = {"base": base.metrics, "dev": {"queries": len(dev.queries),
                                                               "answers": len(dev.corpus)}}
    lines = [f"# MedQuAD dev ({len(dev.queries)} queries, {len(dev.corpus)} answers): base → fine-tuned", ""]
    previous_file = args.out / "medical_matryoshka.json"
    previous = json.loads(previous_file.read_text(encoding="utf-8")) if args.evaluate_only and \
        previous_file.exists() else {}
    tuned_results = {}
    for name in variants:
        if args.evaluate_only:  # models trained by an earlier run of this script: evaluate them again
            run = json.loads((args.out / name / RUN_FILE).read_text(encoding="utf-8"))["result"]
            measured = previous.get(name, {})
            seconds, peak_gib, cpu_seconds = (measured.get("process_seconds", float("nan")),
                                              measured.get("peak_rss_gib", float("nan")),
                                              measured.get("process_cpu_seconds", float("nan")))
        else:
            run, seconds, peak_gib, cpu_seconds = train_variant(name, train_file, args)
        tuned = evaluate_retrieval(load_embedder(str(args.out / name), cache=False, reuse=False), dev,
                                   dimensions=DIMS)
        tuned_results[name] = tuned
        comparisons = compare_results(base, tuned, resamples=2000)
        train_rows = run["split_sizes"]["train"]
        rate = train_rows * args.epochs / max(run["train_seconds"], 1e-9)
        worst = regressions(base, tuned, dev, limit=5)
        report[name] = {"metrics": tuned.metrics, "comparisons": [c.to_dict() for c in comparisons],
                        "train_seconds": run["train_seconds"], "process_seconds": seconds, "peak_rss_gib": peak_gib,
                        "process_cpu_seconds": cpu_seconds,
                        "examples_per_s": rate, "world_size": run["world_size"], "forgetting": run["forgetting"],
                        "worst_regressions": [r.to_dict() for r in worst], "warnings": run["warnings"]}
        lines += [f"## base → {name} ({train_rows} training pairs, {args.epochs:g} epoch(s), "
                  f"{run['world_size']} process(es); training {run['train_seconds'] / 60:.1f} min, "
                  f"{rate:.1f} examples/s; whole `embtune train` {seconds / 60:.1f} min wall, "
                  f"{cpu_seconds / 60:.1f} CPU-min, peak RSS {peak_gib:.2f} GiB)", "",
                  comparison_table(comparisons, ("ndcg@10", "ndcg@10_binary", "recall@3")), ""]
        if run["forgetting"]:
            f = run["forgetting"]
            lines.append(f"Forgetting on {f['data']}: NDCG@10 {f['ndcg@10_before']:.4f} → {f['ndcg@10_after']:.4f} "
                         f"({f['delta'] * 100:+.2f} points)\n")
        lines += [f"5 worst regressions (base → {name}, NDCG@10 at 384):", ""]
        for r in worst:
            moves = ", ".join(f"{item} {a or '-'}→{b or '-'}" for item, (a, b) in r.relevant_moves.items())
            lines.append(f"- `{r.query[:90]}`: {r.value_a:.3f} → {r.value_b:.3f}; relevant answer ranks {moves}")
        lines.append("")
    if "full" in tuned_results:
        for other in [name for name in tuned_results if name != "full"]:
            lines += paired_section(f"full → {other}", "full", tuned_results["full"], other, tuned_results[other])
    if args.compare_with is not None:  # e.g. MiniLM's fine-tune against the default's, on the same queries
        reference = evaluate_retrieval(load_embedder(str(args.compare_with), cache=False, reuse=False), dev,
                                       dimensions=DIMS)
        for name, tuned in tuned_results.items():
            lines += paired_section(f"{args.compare_with} → {name}", args.compare_with.name, reference, name, tuned)
    text = "\n".join(lines)
    print(text)
    (args.out / "medical_matryoshka.md").write_text(text, encoding="utf-8")
    (args.out / "medical_matryoshka.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
