"""``TrainingConfig``: every knob of a fine-tuning run, in one pydantic model, stored with the run.

JSON in (``embtune train CONFIG.json`` or flags), JSON out (beside the model and in the
database), so any run can be repeated exactly. Values are checked here, at the edge, by
pydantic (``core.configs``): a wrong value is one line naming the field and what is allowed.
Values left ``None`` come from the data format's recipe (``core.training.recipes``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from core.configs import EmbtuneConfig
from core.device import device_name
from core.errors import EmbtuneError

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# Trainer fields embtune fills from a run's config (or itself, per run): where to set each instead.
SET_BY_EMBTUNE = {
    "output_dir": "output_dir (checkpoints go beside it)", "num_train_epochs": "epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "batch_size", "per_device_eval_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps", "learning_rate": "learning_rate",
    "warmup_steps": "warmup_ratio", "warmup_ratio": "warmup_ratio", "lr_scheduler_type": "scheduler",
    "bf16": "precision", "fp16": "precision", "use_cpu": "device", "ddp_backend": "(set per run under torchrun)",
    "batch_sampler": "no_duplicates_sampler", "eval_strategy": "eval_each_epoch", "save_strategy": "(each epoch)",
    "save_total_limit": "save_total_limit", "load_best_model_at_end": "keep_best",
    "metric_for_best_model": "metric_for_best", "greater_is_better": "metric_for_best", "seed": "seed",
    "logging_steps": "(set from the run's length)", "report_to": "(none: embtune records the run)",
    "disable_tqdm": "(the progress display)", "save_only_model": "(resume needs the optimiser)",
    "dataloader_drop_last": "(set per run under torchrun)", "prompts": "(the model's own prompts)",
}


class TrainingConfig(EmbtuneConfig):
    """A fine-tuning run. Paths are taken relative to the current folder."""

    _label: ClassVar[str] = "training config"

    data: NonEmpty
    """Training data: CSV/JSONL/Parquet file, a saved Hugging Face dataset folder, ``labels:COLLECTION``
    (pairs labelled in storage) or ``bundled:catalogue``."""
    output_dir: NonEmpty
    """Where the model is written (a normal sentence-transformers folder). Refused if it exists and is
    not an embtune run, unless ``overwrite``."""
    model: str = "default"
    """Base model spec: ``default``, a local folder or a hub id."""
    corpus: str | None = None
    """Items that ``item_id`` columns refer to: a file with id + text, or a collection name."""
    corpus_text_column: str = "text"
    data_format: Literal["auto", "pairs", "triplets", "scored", "classes"] = "auto"
    """pairs, triplets, scored, classes, or auto (from the columns)."""
    loss: Literal["auto", "mnrl", "cached_mnrl", "cosent", "cosine_similarity", "triplet", "contrastive",
                  "batch_all_triplet", "batch_hard_triplet", "batch_semi_hard_triplet",
                  "batch_hard_soft_margin_triplet"] = "auto"
    """auto (the data format's recipe, ``core.training.recipes``: mnrl for pairs, triplets and scored pairs,
    batch_all_triplet for classes), or a loss that reads the format (``core.training.losses.LOSSES_BY_FORMAT``)."""
    loss_scale: PositiveFloat | None = None
    """mnrl/cached_mnrl: the similarity scale (1/temperature); None: the scale the model was trained at when
    it is a known one (the default, e5: 100; minilm: 20), else the loss's own 20. A model pre-trained at a low
    temperature spreads its cosines over a narrow band and learns better at its own scale."""
    similarity_anchor: Annotated[float, Field(ge=0)] | None = None
    """Weight of the similarity anchor: a second loss that keeps the base model's cosine between corpus items
    (each item with its nearest neighbours and a few random ones) while the first one learns the domain; it
    protects search outside the domain (the forgetting check) and leaves the space free to rotate, so the
    Matryoshka prefixes can still be trained. 0: off; None: the recipe's."""
    matryoshka_dims: list[PositiveInt] | None = None
    """Wrap the loss in MatryoshkaLoss at these dimensions (e.g. [384, 256, 128, 64]); empty: no;
    None: the recipe's (the model's dimension and 256/128/64 for retrieval formats)."""
    principal_axes: bool = True
    """After a Matryoshka run, turn the output onto the principal axes of the domain's texts (an orthogonal layer:
    no full-width cosine changes) when that does not lower validation at the smallest dimension; the cut vectors
    then keep the directions the domain varies along (``core.training.prefix_axes``)."""
    matryoshka_weights: list[PositiveFloat] = Field(default_factory=list)
    """One weight per Matryoshka dimension, in the same order as given (empty: all 1). Larger weights
    on the small dimensions trade a little full-size quality for much better small vectors."""
    epochs: PositiveFloat | None = None
    """None: the recipe's (values left unset come from ``core.training.recipes`` for the data's format)."""
    batch_size: PositiveInt | None = None
    gradient_accumulation_steps: PositiveInt = 1
    learning_rate: Annotated[float, Field(gt=0, lt=1)] | None = None
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, else fp32. A CUDA-only choice on a CPU falls back with a warning."""
    max_seq_length: PositiveInt = 128
    """Longer inputs are cut; 128 keeps CPU training fast (MedQuAD answers average ~790 characters)."""
    no_duplicates_sampler: bool = True
    """Keep equal texts out of one batch for in-batch-negative losses (they would be false negatives)."""
    mini_batch_size: PositiveInt = 32
    """cached_mnrl only: the chunk size that bounds memory while the effective batch stays large."""
    eval_each_epoch: bool = True
    metric_for_best: str = "auto"
    """The validation metric that picks the best checkpoint; auto: graded NDCG@10 at the smallest dimension."""
    keep_best: bool = True
    seed: int = 42
    group_by: str = "auto"
    """Split grouping column: auto = ``focus`` when present, else the anchor (query)."""
    validation_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    test_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2
    relevance_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Scored pairs: score ≥ threshold makes a positive (for mnrl and binary metrics)."""
    augment_typos: NonNegativeInt | None = None
    """Typo'd variants added per training query (split/merge words, swaps, keyboard slips, look-alikes); 0: off;
    None: the recipe's."""
    hard_negatives: NonNegativeInt = 0
    """Negatives mined per training pair with the base model (mnrl losses); 0: in-batch negatives only."""
    negative_margin: Annotated[float, Field(ge=0, lt=1)] = 0.05
    """A mined negative within this fraction of the positive's score is flagged and not trained on."""
    use_flagged_negatives: bool = False
    negatives_file: str | None = None
    """A reviewed mined_negatives.jsonl (from an earlier run) to train with instead of mining anew."""
    lora: bool = False
    lora_r: PositiveInt = 8
    lora_alpha: PositiveInt = 16
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    lora_target_modules: list[str] | None = None
    """None: the attention query/value projections, found by name."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1: the epochs decide."""
    save_total_limit: PositiveInt = 2
    checkpoint_minutes: PositiveFloat = 5.0
    """Besides each epoch's, a checkpoint at least this often during training: a kill loses at most this much."""
    resume: bool = False
    """Continue from the last checkpoint in output_dir."""
    overwrite: bool = False
    collection: str | None = None
    """The collection this run is trained for (the demos pick its newest finished run)."""
    run_name: str | None = None
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps; an accelerator that is missing here falls back to the CPU with a warning."""
    forgetting_check: bool = True
    forgetting_data: str = "bundled:general"
    """The out-of-domain set for the forgetting check: bundled:general, bundled:catalogue or a retrieval folder/file."""
    forgetting_threshold: Annotated[float, Field(ge=0, le=100)] = 1.0
    """NDCG@10 points (0..100 scale) the forgetting set may lose before the gate rejects the run."""
    accept_worse: bool = False
    """Let a run that the gate rejects finish (and be served) anyway; recorded with the run."""
    test_data: str | None = None
    """A separate retrieval set (folder of corpus/queries/qrels, or pairs file) for the before/after table;
    default: the held-out test split of ``data``."""
    trainer_args: dict[str, Any] = Field(default_factory=dict)
    """Any other ``SentenceTransformerTrainingArguments`` field, passed to the trainer as given (e.g.
    ``{"weight_decay": 0.01, "max_grad_norm": 0.5}``): the trainer's whole surface without a copy of each
    field here. The ones this config or embtune sets are refused with the field to use instead."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        """A typo is refused here, before any work; a known accelerator missing here falls back later."""
        try:
            return device_name(value)
        except EmbtuneError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        if value == 0 or value < -1:  # the trainer reads 0 as "no limit": a whole run where none was asked for
            raise ValueError(f"{value} steps: give a positive number (or -1: the epochs decide)")
        return value

    @field_validator("trainer_args")
    @classmethod
    def _trainer_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        import dataclasses

        from sentence_transformers import SentenceTransformerTrainingArguments

        known = {f.name for f in dataclasses.fields(SentenceTransformerTrainingArguments) if f.init}
        for name in value:
            if name in SET_BY_EMBTUNE:
                raise ValueError(f"{name!r} is set by embtune: use {SET_BY_EMBTUNE[name]} instead")
            if name not in known:
                raise ValueError(f"{name!r} is not a SentenceTransformerTrainingArguments field")
        return value

    @model_validator(mode="after")
    def _matryoshka_in_order(self) -> TrainingConfig:
        """Dimensions distinct, weights one per dimension; both sorted largest dimension first."""
        if self.matryoshka_dims is None:
            if self.matryoshka_weights:
                raise ValueError("matryoshka_weights need matryoshka_dims given with them")
            return self
        dims, weights = list(self.matryoshka_dims), list(self.matryoshka_weights)
        if len(set(dims)) != len(dims):
            raise ValueError(f"matryoshka_dims {dims} must be distinct, e.g. [384, 256, 128, 64]")
        if weights and len(weights) != len(dims):
            raise ValueError(f"matryoshka_weights: give {len(dims)} positive weights, one per Matryoshka dimension")
        order = sorted(range(len(dims)), key=lambda i: -dims[i])
        self.matryoshka_dims = [dims[i] for i in order]
        self.matryoshka_weights = [weights[i] for i in order] if weights else []
        return self
