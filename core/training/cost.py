"""What a run will cost before it is launched: its step count, planned the way the trainer will count it, and
the time those steps take on this machine for that model — read from earlier runs of the same base model, or
measured by a short probe of a few real training steps (kept in the workspace, so it runs once).

Both feed the Train page's "about N min" line; nothing here is a constant: a busy machine measures slower.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.training.config import TrainingConfig

PROBE_STEPS = 4
"""Training steps a probe runs; the first is left out of the timing (it pays for warm-up)."""
MIN_RUN_STEPS = 10
"""Steps an earlier run must have taken for its speed to stand for a new run's (its first step pays for warm-up)."""


@dataclass(frozen=True)
class StepPlan:
    """The steps a run will take, and the rows behind them."""

    steps: int
    batches_per_epoch: int
    domain_rows: int
    anchor_rows: int


@dataclass(frozen=True)
class SpeedEstimate:
    """Seconds per training step for a run's model and batch on this machine, and where the figure comes from."""

    seconds_per_step: float
    source: str
    overhead_s: float | None = None
    """Loading, evaluation and saving around the steps (from an earlier run of the same base model)."""

    def minutes(self, steps: int) -> float:
        return (steps * self.seconds_per_step + (self.overhead_s or 0.0)) / 60


def plan_steps(config: TrainingConfig, *, db: Any = None) -> StepPlan:
    """The trainer's step count for ``config``, without loading the model: the training split after typo
    variants, the rows the chosen loss reads, the similarity anchor's rows beside them, batched as the trainer
    batches them (each dataset rounded up to whole batches), times the epochs (``max_steps`` caps it)."""
    from core.data.augment import augment_with_typos
    from core.data.split import split_by_group
    from core.data.training_data import group_column_for, load_training_data, loss_dataset
    from core.training.anchor import anchor_row_count, unique_texts
    from core.training.losses import choose_loss
    from core.training.recipes import apply_recipe

    data = load_training_data(config.data, data_format=config.data_format, corpus=config.corpus,
                              corpus_text_column=config.corpus_text_column, db=db)
    config = apply_recipe(config, data.data_format)
    loss = choose_loss(config.loss, data.data_format)
    splits = split_by_group(data.frame, group_column_for(data.frame, config.group_by),
                            validation=config.validation_fraction, test=config.test_fraction, seed=config.seed,
                            source=config.data)
    train_frame = augment_with_typos(splits.train, config.augment_typos, seed=config.seed)
    domain_rows = len(loss_dataset(train_frame, loss, data.data_format, config.relevance_threshold))
    anchor_rows = 0
    if data.data_format != "classes" and config.similarity_anchor:
        anchor_rows = anchor_row_count(len(unique_texts(list(data.corpus.values()))), domain_rows)
    batches = sum(math.ceil(rows / config.batch_size) for rows in (domain_rows, anchor_rows) if rows)
    per_epoch = max(batches // config.gradient_accumulation_steps, 1)
    steps = math.ceil(config.epochs * per_epoch)
    if config.max_steps and config.max_steps > 0:
        steps = min(steps, config.max_steps)
    return StepPlan(steps, batches, domain_rows, anchor_rows)


def speed_from_runs(config: TrainingConfig, runs: list[Any]) -> SpeedEstimate | None:
    """Seconds per step from the newest run of the same base model that trained (scaled to this batch size),
    with its time outside the steps; None when no such run exists."""
    for run in runs:  # newest first
        progress, used = run.progress or {}, run.config or {}
        steps, elapsed = int(progress.get("step") or 0), float(progress.get("elapsed_s") or 0.0)
        if used.get("model") != config.model or used.get("resume") or steps < MIN_RUN_STEPS or elapsed <= 0:
            continue
        per_step = elapsed / steps * (config.batch_size or used.get("batch_size") or 1) / (used.get("batch_size") or 1)
        overhead = None
        if run.started_at is not None and run.finished_at is not None:
            overhead = max(0.0, (run.finished_at - run.started_at).total_seconds() - elapsed)
        return SpeedEstimate(per_step, f"run {run.name} ({steps} steps at batch {used.get('batch_size')})", overhead)
    return None


def probe_speed(config: TrainingConfig, *, db: Any = None, cache_file: str | Path | None = None,
                steps: int = PROBE_STEPS) -> SpeedEstimate:
    """Time a few real training steps of ``config``'s model, loss and batch on a sample of its data (no
    checkpoint, nothing recorded). The figure is kept in ``cache_file`` per text of the batch, under the model,
    sequence length, LoRA, device and CPU count, so the same question is answered from there next time (at any
    batch size)."""
    known = _read(cache_file)
    entry = known.get(speed_key(config))
    if entry is None:
        per_step = _time_steps(config, db=db, steps=steps)
        source = f"a probe of {steps} steps on this machine ({time.strftime('%Y-%m-%d %H:%M')})"
        if cache_file:
            remember_speed(cache_file, config, per_step, source)
        return SpeedEstimate(per_step, source)
    return SpeedEstimate(float(entry["seconds_per_text"]) * _batch(config), entry["source"])


def speed_key(config: TrainingConfig) -> str:
    return "|".join(str(v) for v in (config.model, config.max_seq_length, config.lora, config.device, os.cpu_count()))


def remember_speed(cache_file: str | Path, config: TrainingConfig, seconds_per_step: float, source: str) -> None:
    """Keep a measured speed for :func:`probe_speed` (per text of the batch, so any batch size reads it)."""
    from storage.workspace import atomic_write_json

    known = _read(cache_file)
    known[speed_key(config)] = {"seconds_per_text": seconds_per_step / _batch(config), "source": source}
    atomic_write_json(Path(cache_file), known)


def _batch(config: TrainingConfig) -> int:
    return int(config.batch_size or 1) * int(config.gradient_accumulation_steps or 1)


def _read(cache_file: str | Path | None) -> dict[str, Any]:
    import json

    if not cache_file or not Path(cache_file).is_file():
        return {}
    try:
        return dict(json.loads(Path(cache_file).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}  # a damaged file only costs a new probe


def _time_steps(config: TrainingConfig, *, db: Any, steps: int) -> float:
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import TrainerCallback

    from core.data.training_data import column_prompts, load_training_data, loss_dataset
    from core.training.arguments import training_arguments
    from core.training.losses import build_loss, choose_loss
    from core.training.model import device_and_precision, load_trainable, model_dimension
    from core.training.recipes import apply_recipe, resolve_matryoshka_dims

    data = load_training_data(config.data, data_format=config.data_format, corpus=config.corpus,
                              corpus_text_column=config.corpus_text_column, db=db)
    config = apply_recipe(config, data.data_format)
    loss_name = choose_loss(config.loss, data.data_format)
    device, precision = device_and_precision(config, [])
    model = load_trainable(config, device)
    dims = resolve_matryoshka_dims(config, data.data_format, model_dimension(model))
    sample = data.frame.sample(n=min(len(data.frame), config.batch_size * steps), random_state=config.seed)
    dataset = loss_dataset(sample, loss_name, data.data_format, config.relevance_threshold)
    loss = build_loss(loss_name, model, matryoshka_dims=dims, mini_batch_size=config.mini_batch_size,
                      scale=config.loss_scale)
    scratch = Path(tempfile.mkdtemp(prefix="embtune-probe-"))
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

    try:
        args = training_arguments(config.replace(max_steps=steps), loss_name, scratch, precision, device,
                                  len(dataset), False, "", False)
        args = dataclasses.replace(args, save_strategy="no", eval_strategy="no", load_best_model_at_end=False,
                                   metric_for_best_model=None, logging_strategy="no")
        args.prompts = column_prompts(getattr(model, "prompts", None), dataset.column_names) or None
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                             callbacks=[Stamp()])
        started = time.perf_counter()
        trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if len(stamps) >= 2:
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return (stamps[-1] - started) if stamps else 0.0
