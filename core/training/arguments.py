"""The trainer's arguments for a run: one translation of a ``TrainingConfig`` into
sentence-transformers' ``SentenceTransformerTrainingArguments`` (batches without duplicates for
in-batch losses, keep-best on the validation metric, gloo on CPU under torchrun, per-epoch saves).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.training.config import TrainingConfig
from core.training.losses import IN_BATCH_NEGATIVE_LOSSES


def training_arguments(config: TrainingConfig, loss_name: str, checkpoints: Path, precision: str, device: str,
                        train_rows: int, evaluate_epochs: bool, metric_for_best: str, show_progress: bool) -> Any:
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    in_batch = loss_name in IN_BATCH_NEGATIVE_LOSSES
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        **warmup(config.warmup_ratio),
        lr_scheduler_type=config.scheduler,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and distributed else None,
        batch_sampler=BatchSamplers.NO_DUPLICATES if in_batch and config.no_duplicates_sampler
        else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="epoch" if evaluate_epochs else "no",
        save_strategy="epoch",
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=evaluate_epochs and config.keep_best,
        metric_for_best_model=f"eval_{metric_for_best}" if evaluate_epochs else None,
        greater_is_better=True,
        logging_steps=max(1, min(10, steps_per_epoch(train_rows, config) // 4 or 1)),
        seed=config.seed,
        report_to=[],
        disable_tqdm=not show_progress,
        save_only_model=False,
        dataloader_drop_last=in_batch and distributed,
        **config.trainer_args,  # the rest of the trainer's fields, checked against SET_BY_EMBTUNE at the edge
    )


def warmup(ratio: float) -> dict[str, float]:
    """transformers 5 takes the warm-up ratio as a float ``warmup_steps``; 4.x as ``warmup_ratio``."""
    import transformers

    return {"warmup_steps": ratio} if int(transformers.__version__.split(".")[0]) >= 5 else {"warmup_ratio": ratio}


def steps_per_epoch(rows: int, config: TrainingConfig) -> int:
    return max(1, rows // (config.batch_size * config.gradient_accumulation_steps))
