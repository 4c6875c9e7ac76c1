"""Training benchmark: embtune's ``train()`` against a plain ``SentenceTransformerTrainer`` script.

Why: embtune's ``train()`` wraps sentence-transformers' trainer with data loading and
validation, a grouped split, its own graded validation evaluator, a progress/cancel
callback, a run record, the before/after table on the test split and a forgetting check.
The issue's target is that the training loop itself costs no more than 1.05x what the plain
library takes for the same work. This script runs both in one process on the same data:

* A, embtune: ``train(TrainingConfig(...))``; its train loop is ``TrainingResult.train_seconds``.
* B, plain: the script a sentence-transformers user would write: the bundled model,
  ``MatryoshkaLoss(MultipleNegativesRankingLoss)`` at the same dims, the same arguments
  (epochs, batch size, lr, warm-up, seed, NO_DUPLICATES batches, CPU), evaluation each epoch
  with the library's ``InformationRetrievalEvaluator`` on the same validation split, a
  checkpoint each epoch and the best one loaded at the end. Its train/validation data are
  built from the very split embtune uses (``split_by_group`` with the same fractions and seed).

Both train on identical rows in identical order with the same seed, so they take the same
steps. The headline ratio is embtune's train-loop time over the plain one. End-to-end times
are printed too; what embtune does beyond the plain script (test-split before/after, the
forgetting check, saving the final model with its record) is listed as "embtune extras".

Runs alternate A B B A ... (``--repeats`` of each) and medians are reported: on a shared
machine wall times drift, and interleaving spreads that drift over both variants alike.
The plain evaluator is, by default, a single ``InformationRetrievalEvaluator`` at the
smallest Matryoshka dimension (the one embtune keeps the best epoch by): the least work a
plain script can do and still choose the best epoch the same way, so the ratio is not
flattered. ``--plain-eval all-dims`` gives the library's documented Matryoshka pattern
instead (a ``SequentialEvaluator`` with one IR evaluator per dimension), which reports what
embtune reports.

Run from the repository root::

    .venv/bin/python benchmarks/train.py      # defaults: 1 epoch, A B B A (~3 min on 2 idle cores, 20+ when shared)
    .venv/bin/python benchmarks/train.py --repeats 3 --epochs 2 --plain-eval all-dims
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local data only: never reach the hub
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import functools
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_report, cpu_snapshot, machine_line

DATA = "bundled:catalogue"
VALIDATION, TEST, SEED, RELEVANT = 0.1, 0.2, 42, 0.5
EVAL_BATCH = 64  # embtune's evaluator encodes with TextEmbedder's batch size, 64


@dataclass
class Run:
    """One timed training run of either variant."""

    variant: str
    train_s: float  # the trainer.train() call alone
    total_s: float  # end to end, from loading the data to the last byte written
    steps: int
    pairs: int  # training pairs per epoch
    train_cpu_s: float = 0.0  # this process's CPU seconds (all threads) in trainer.train(): less hurt by neighbours
    phases: dict[str, float] = field(default_factory=dict)  # seconds by phase, inside and outside the loop


class PhaseClock:
    """Seconds spent in wrapped functions, by phase name; the same wrappers instrument both variants."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.step_starts: list[float] = []

    def mark_steps(self, owner: Any, attribute: str) -> Callable[[], None]:
        """Note when each call of ``owner.attribute`` (the trainer's ``training_step``) begins."""
        original = getattr(owner, attribute)
        own = attribute in vars(owner)

        @functools.wraps(original)
        def marked(*args: Any, **kwargs: Any) -> Any:
            self.step_starts.append(time.perf_counter())
            return original(*args, **kwargs)

        setattr(owner, attribute, marked)
        return (lambda: setattr(owner, attribute, original)) if own else (lambda: delattr(owner, attribute))

    def wrap(self, owner: Any, attribute: str, phase: str, cpu: bool = False) -> Callable[[], None]:
        """Time every call of ``owner.attribute`` under ``phase`` (and this process's CPU seconds under
        ``cpu: phase`` when ``cpu``); returns the undo."""
        original = getattr(owner, attribute)
        own = attribute in vars(owner)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                if cpu:
                    self.seconds[f"cpu: {phase}"] += time.process_time() - cpu_start

        setattr(owner, attribute, timed)
        return (lambda: setattr(owner, attribute, original)) if own else (lambda: delattr(owner, attribute))

    @contextmanager
    def collecting(self) -> Iterator[dict[str, float]]:
        self.seconds = defaultdict(float)
        self.step_starts = []
        out: dict[str, float] = {}
        try:
            yield out
        finally:
            out.update(self.seconds)
            cycles = [b - a for a, b in zip(self.step_starts, self.step_starts[1:], strict=False)]
            out["step: median cycle"] = statistics.median(cycles) if cycles else float("nan")


def instrument(clock: PhaseClock) -> list[Callable[[], None]]:
    """Time the loop and its evaluation and checkpointing (shared trainer code), embtune's progress
    callback and embtune's after-steps. The callback runs inside the loop (and partly inside evaluate),
    so it is shown apart and not subtracted."""
    from sentence_transformers import SentenceTransformerTrainer as Trainer

    import core.training.train as embtune_train
    from core.training.callbacks import ProgressBridge

    callback = "callback: embtune progress (inside the loop)"
    return [
        clock.wrap(Trainer, "train", "train", cpu=True),
        clock.mark_steps(Trainer, "training_step"),
        *(clock.wrap(ProgressBridge, hook, callback) for hook in ("on_train_begin", "on_log", "on_evaluate",
                                                                 "on_step_end", "on_train_end")),
        clock.wrap(Trainer, "evaluate", "loop: evaluate each epoch"),
        clock.wrap(Trainer, "_save_checkpoint", "loop: save checkpoint"),
        clock.wrap(Trainer, "_load_best_model", "loop: load best at end"),
        clock.wrap(embtune_train, "_before_after", "extras: before/after on test split"),
        clock.wrap(embtune_train, "_forgetting", "extras: forgetting check"),
        clock.wrap(embtune_train, "_save_model", "extras: save model + run record"),
    ]


def run_embtune(args: argparse.Namespace, workdir: Path, clock: PhaseClock, forgetting: bool) -> Run:
    from core.training.config import TrainingConfig
    from core.training.train import train

    config = TrainingConfig(
        data=DATA, output_dir=str(workdir / "embtune"), loss="mnrl", matryoshka_dims=list(args.dims),
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, warmup_ratio=args.warmup,
        max_seq_length=args.max_seq_length, seed=SEED, validation_fraction=VALIDATION, test_fraction=TEST,
        relevance_threshold=RELEVANT, device="cpu", precision="fp32", forgetting_check=forgetting, overwrite=True,
    )
    with clock.collecting() as phases:
        start = time.perf_counter()
        result = train(config, show_progress=False)
        total = time.perf_counter() - start
    pairs = sum(1 for _ in _positive_pairs()[0])
    return Run("embtune", result.train_seconds, total, result.global_steps, pairs, phases=phases,
               train_cpu_s=phases.get("cpu: train", 0.0))


@functools.cache
def _positive_pairs() -> tuple[list[tuple[str, str]], Any, dict[str, str]]:
    """Training pairs (score ≥ threshold), the validation rows and the corpus, from embtune's own split."""
    from core.data.split import split_by_group
    from core.data.training_data import group_column_for, load_training_data

    data = load_training_data(DATA)
    frame = data.frame
    splits = split_by_group(frame, group_column_for(frame), validation=VALIDATION, test=TEST, seed=SEED)
    train = splits.train[splits.train["score"].astype(float) >= RELEVANT]
    return list(zip(train["anchor"], train["positive"], strict=True)), splits.validation, dict(data.corpus)


def _warmup_kwargs(ratio: float) -> dict[str, float]:
    import transformers

    return {"warmup_steps": ratio} if int(transformers.__version__.split(".")[0]) >= 5 else {"warmup_ratio": ratio}


def plain_evaluator(validation: Any, corpus: dict[str, str], dims: list[int], mode: str) -> tuple[Any, str]:
    """The library's IR evaluator on the validation split, and the metric that picks the best epoch.

    It encodes in batches of 64, as embtune's evaluator does (``TextEmbedder``'s default), rather
    than the library's default 32, so a batch-size difference does not flatter either side.
    """
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
        SequentialEvaluator,
    )

    query_ids: dict[str, str] = {}
    relevant: dict[str, set[str]] = defaultdict(set)
    for row in validation.itertuples(index=False):
        query_ids.setdefault(row.anchor, str(row.query_id))
        if float(row.score) >= RELEVANT:
            relevant[query_ids[row.anchor]].add(str(row.item_id))
    queries = {query_id: anchor for anchor, query_id in query_ids.items()}
    smallest = min(dims)

    def one(dim: int) -> Any:
        return InformationRetrievalEvaluator(queries, corpus, dict(relevant), name=f"validation_{dim}",
                                             truncate_dim=dim, batch_size=EVAL_BATCH, write_csv=False)

    best = f"eval_validation_{smallest}_cosine_ndcg@10"
    if mode == "min-dim":
        return one(smallest), best
    return SequentialEvaluator([one(d) for d in sorted(dims, reverse=True)]), best


def run_plain(args: argparse.Namespace, workdir: Path, clock: PhaseClock) -> Run:
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback

    from core.embedders.registry import KNOWN_MODELS

    with clock.collecting() as phases:
        start = time.perf_counter()
        _positive_pairs.cache_clear()  # the plain script pays for its data like embtune does
        pairs, validation, corpus = _positive_pairs()
        dataset = datasets.Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
        model = SentenceTransformer(str(KNOWN_MODELS["default"].package_folder()), device="cpu")
        model.max_seq_length = args.max_seq_length
        loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=list(args.dims))
        evaluator, best_metric = plain_evaluator(validation, corpus, list(args.dims), args.plain_eval)
        training_args = SentenceTransformerTrainingArguments(
            output_dir=str(workdir / "plain-checkpoints"), num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
            learning_rate=args.lr, **_warmup_kwargs(args.warmup), seed=SEED, use_cpu=True,
            batch_sampler=BatchSamplers.NO_DUPLICATES, eval_strategy="epoch", save_strategy="epoch",
            save_total_limit=2, load_best_model_at_end=True, metric_for_best_model=best_metric,
            greater_is_better=True, report_to=[], disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset, loss=loss,
                                             evaluator=evaluator)
        trainer.remove_callback(PrinterCallback)  # as embtune does with its bar off: no per-log printing
        loop_start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - loop_start
        model.save(str(workdir / "plain-model"))
        total = time.perf_counter() - start
    return Run("plain", train_s, total, int(trainer.state.global_step), len(dataset), phases=phases,
               train_cpu_s=phases.get("cpu: train", 0.0))


def warm_up(args: argparse.Namespace) -> None:
    """Pay import and first-call costs before any timed run (they would land on whichever ran first).

    That includes a few untimed training steps: the first backward pass and optimizer step in a
    process are slower (allocator, autograd and kernel set-up), and would otherwise be charged to A.
    """
    import datasets
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from transformers.trainer_callback import PrinterCallback

    import core.training.train  # noqa: F401
    from core.embedders.registry import KNOWN_MODELS

    model = SentenceTransformer(str(KNOWN_MODELS["default"].package_folder()), device="cpu")
    model.max_seq_length = args.max_seq_length
    model.encode(["прогрев", "warm-up"], show_progress_bar=False)
    pairs = _positive_pairs()[0][: 3 * args.batch_size]
    with tempfile.TemporaryDirectory(prefix="embtune-bench-warmup-") as tmp:
        trainer = SentenceTransformerTrainer(
            model=model,
            args=SentenceTransformerTrainingArguments(
                output_dir=tmp, max_steps=3, per_device_train_batch_size=args.batch_size, use_cpu=True,
                save_strategy="no", report_to=[], disable_tqdm=True, seed=SEED),
            train_dataset=datasets.Dataset.from_dict({"anchor": [a for a, _ in pairs],
                                                      "positive": [p for _, p in pairs]}),
            loss=MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=list(args.dims)),
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(runs: list[Run], args: argparse.Namespace, forgetting: bool) -> str:
    by = {name: [r for r in runs if r.variant == name] for name in ("embtune", "plain")}
    loop = {name: median([r.train_s for r in rs]) for name, rs in by.items()}
    total = {name: median([r.total_s for r in rs]) for name, rs in by.items()}
    cpu = {name: median([r.train_cpu_s for r in rs]) for name, rs in by.items()}
    step = {name: median([r.phases["step: median cycle"] for r in rs]) for name, rs in by.items()}
    pairs = by["plain"][0].pairs * args.epochs
    sequence = " ".join("A" if r.variant == "embtune" else "B" for r in runs)
    lines = [
        f"train-loop and end-to-end seconds, medians of {args.repeats} runs each (A = embtune, B = plain, run "
        f"order {sequence}); {DATA}, {by['plain'][0].pairs} training pairs, "
        f"{args.epochs:g} epoch(s), batch {args.batch_size}, max_seq_length {args.max_seq_length}, "
        f"Matryoshka {list(args.dims)}, lr {args.lr:g}, CPU fp32; plain evaluator: {args.plain_eval}",
        "",
        "| variant | train loop s (median) | examples/s | ratio to plain | median step s | step ratio "
        "| end to end s (median) | steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("plain", "embtune"):
        lines.append(f"| {name} | {loop[name]:.1f} | {pairs / loop[name]:.1f} | {loop[name] / loop['plain']:.3f} "
                     f"| {step[name]:.2f} | {step[name] / step['plain']:.3f} | {total[name]:.1f} "
                     f"| {by[name][0].steps} |")
    pairs_ratio = [f"{a.train_s / b.train_s:.3f}" for a, b in _pairs(runs)]
    lines += [
        "",
        f"train-loop ratio embtune / plain (wall): **{loop['embtune'] / loop['plain']:.3f}** (target ≤ 1.05); "
        f"per neighbouring A/B pair: {', '.join(pairs_ratio)}",
        "median step s: the median time from one training step's start to the next (data, forward, backward, "
        "optimizer, callbacks, logging), taken within each run, then the median over runs; a slow spell on the "
        "machine moves it less than the total.",
        f"process CPU seconds in the loop, medians (diagnostic only: under contention waiting torch threads "
        f"spin, so CPU time swings more than wall time): plain {cpu['plain']:.1f}, embtune {cpu['embtune']:.1f}",
        "",
        "| where the time goes (medians, s) | plain | embtune |",
        "|---|---:|---:|",
    ]
    phases = sorted({p for r in runs for p in r.phases if p.startswith(("loop", "callback", "extras"))},
                    key=lambda p: (not p.startswith("loop"), p))
    for phase in phases:
        cells = [median([r.phases.get(phase, 0.0) for r in by[name]]) for name in ("plain", "embtune")]
        lines.append(f"| {phase} | {cells[0]:.2f} | {cells[1]:.2f} |")
    steps = {name: median([r.train_s - sum(v for p, v in r.phases.items() if p.startswith("loop"))
                           for r in rs]) for name, rs in by.items()}
    setup = {name: median([r.total_s - r.train_s - sum(v for p, v in r.phases.items() if p.startswith("extras"))
                           for r in rs]) for name, rs in by.items()}
    lines.append(f"| loop: training steps (rest of the loop) | {steps['plain']:.2f} | {steps['embtune']:.2f} |")
    lines.append(f"| setup: data, split, model, trainer (+ plain: final save) | {setup['plain']:.1f} "
                 f"| {setup['embtune']:.1f} |")
    extras = median([sum(v for p, v in r.phases.items() if p.startswith("extras")) for r in by["embtune"]])
    lines += ["", f"embtune extras (before/after on the test split{', forgetting check' if forgetting else ''}, "
              f"final save with run record): {extras:.1f} s per run, outside the train loop"]
    return "\n".join(lines)


def _pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(embtune, plain) runs that sat next to each other: A B | B A | A B ..."""
    out = []
    for start in range(0, len(runs) - 1, 2):
        first, second = runs[start], runs[start + 1]
        if {first.variant, second.variant} == {"embtune", "plain"}:
            out.append((first, second) if first.variant == "embtune" else (second, first))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant, alternating A B B A ...")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up ratio")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 256, 128, 64], help="Matryoshka dimensions")
    parser.add_argument("--plain-eval", choices=("min-dim", "all-dims"), default="min-dim",
                        help="plain evaluator: one IR evaluator at the smallest dim, or one per dim")
    parser.add_argument("--no-forgetting-check", action="store_true",
                        help="skip embtune's forgetting check (does not touch the train loop)")
    args = parser.parse_args(argv)
    args.dims = sorted(set(args.dims), reverse=True)

    logging.basicConfig(level=logging.WARNING)
    import torch

    print(machine_line())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    warm_up(args)
    clock = PhaseClock()
    undo = instrument(clock)
    forgetting = not args.no_forgetting_check
    order = [("embtune", "plain")[(i + i // 2) % 2] for i in range(2 * args.repeats)]  # A B B A A B B A ...
    runs: list[Run] = []
    snapshot = cpu_snapshot()
    try:
        for position, variant in enumerate(order):
            with tempfile.TemporaryDirectory(prefix=f"embtune-bench-{variant}-") as tmp:
                if variant == "embtune":
                    run = run_embtune(args, Path(tmp), clock, forgetting)
                else:
                    run = run_plain(args, Path(tmp), clock)
            runs.append(run)
            print(f"[{position + 1}/{len(order)}] {variant}: train loop {run.train_s:.1f} s "
                  f"({run.train_cpu_s:.1f} CPU s), end to end "
                  f"{run.total_s:.1f} s, {run.steps} steps", flush=True)
    finally:
        for restore in undo:
            restore()
    print()
    print(report(runs, args, forgetting))
    print()
    print(cpu_report(snapshot))


if __name__ == "__main__":
    main()
