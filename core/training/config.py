"""``TrainingConfig``: every knob of a fine-tuning run, in one dataclass, stored with the run.

JSON in (``embtune train CONFIG.json`` or flags), JSON out (beside the model and in the
database), so any run can be repeated exactly. Values are checked here, at the edge, with
messages that say which value is wrong and what is allowed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError

LOSSES = ("auto", "mnrl", "cached_mnrl", "cosent", "cosine_similarity", "triplet", "contrastive",
          "batch_all_triplet")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
FORMATS = ("auto", "pairs", "triplets", "scored", "classes")


@dataclass
class TrainingConfig:
    """A fine-tuning run. Paths are taken relative to the current folder."""

    data: str
    """Training data: CSV/JSONL/Parquet file, a saved Hugging Face dataset folder, ``labels:COLLECTION``
    (pairs labelled in storage) or ``bundled:catalogue``."""
    output_dir: str
    """Where the model is written (a normal sentence-transformers folder). Refused if it exists and is
    not an embtune run, unless ``overwrite``."""
    model: str = "default"
    """Base model spec: ``default``, a local folder or a hub id."""
    corpus: str | None = None
    """Items that ``item_id`` columns refer to: a file with id + text, or a collection name."""
    corpus_text_column: str = "text"
    data_format: str = "auto"
    """pairs, triplets, scored, classes, or auto (from the columns)."""
    loss: str = "auto"
    """auto (the data format's recipe, ``core.training.recipes``: mnrl for pairs, triplets and scored pairs,
    batch_all_triplet for classes), mnrl, cached_mnrl, cosent, cosine_similarity, triplet, contrastive,
    batch_all_triplet."""
    loss_scale: float | None = None
    """mnrl/cached_mnrl: the similarity scale (1/temperature); None keeps the loss's own (20). Models
    pre-trained at a low temperature, like e5 (0.01), spread their cosines over a narrow band and learn
    better at a larger scale."""
    matryoshka_dims: list[int] | None = None
    """Wrap the loss in MatryoshkaLoss at these dimensions (e.g. [384, 256, 128, 64]); empty: no;
    None: the recipe's (the model's dimension and 256/128/64 for retrieval formats)."""
    matryoshka_weights: list[float] = field(default_factory=list)
    """One weight per Matryoshka dimension, in the same order as given (empty: all 1). Larger weights
    on the small dimensions trade a little full-size quality for much better small vectors."""
    epochs: float | None = None
    """None: the recipe's (values left unset come from ``core.training.recipes`` for the data's format)."""
    batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float | None = None
    warmup_ratio: float = 0.1
    scheduler: str = "linear"
    precision: str = "auto"
    """auto: bf16 on a GPU that supports it, else fp32. A CUDA-only choice on a CPU falls back with a warning."""
    max_seq_length: int = 128
    """Longer inputs are cut; 128 keeps CPU training fast (MedQuAD answers average ~790 characters)."""
    no_duplicates_sampler: bool = True
    """Keep equal texts out of one batch for in-batch-negative losses (they would be false negatives)."""
    mini_batch_size: int = 32
    """cached_mnrl only: the chunk size that bounds memory while the effective batch stays large."""
    eval_each_epoch: bool = True
    metric_for_best: str = "auto"
    """The validation metric that picks the best checkpoint; auto: graded NDCG@10 at the smallest dimension."""
    keep_best: bool = True
    seed: int = 42
    group_by: str = "auto"
    """Split grouping column: auto = ``focus`` when present, else the anchor (query)."""
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    relevance_threshold: float = 0.5
    """Scored pairs: score ≥ threshold makes a positive (for mnrl and binary metrics)."""
    augment_typos: int | None = None
    """Typo'd variants added per training query (split/merge words, swaps, keyboard slips, look-alikes); 0: off;
    None: the recipe's."""
    hard_negatives: int = 0
    """Negatives mined per training pair with the base model (mnrl losses); 0: in-batch negatives only."""
    negative_margin: float = 0.05
    """A mined negative within this fraction of the positive's score is flagged and not trained on."""
    use_flagged_negatives: bool = False
    negatives_file: str | None = None
    """A reviewed mined_negatives.jsonl (from an earlier run) to train with instead of mining anew."""
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None
    """None: the attention query/value projections, found by name."""
    max_steps: int = -1
    save_total_limit: int = 2
    checkpoint_minutes: float = 5.0
    """Besides each epoch's, a checkpoint at least this often during training: a kill loses at most this much."""
    resume: bool = False
    """Continue from the last checkpoint in output_dir."""
    overwrite: bool = False
    collection: str | None = None
    """The collection this run is trained for (the demos pick its newest finished run)."""
    run_name: str | None = None
    device: str = "auto"
    forgetting_check: bool = True
    forgetting_data: str = "bundled:general"
    forgetting_threshold: float = 1.0
    """NDCG@10 points (0..100 scale) the forgetting set may lose before the gate rejects the run."""
    accept_worse: bool = False
    """Let a run that the gate rejects finish (and be served) anyway; recorded with the run."""
    """The out-of-domain set for the forgetting check: bundled:general, bundled:catalogue or a retrieval folder/file."""
    test_data: str | None = None
    """A separate retrieval set (folder of corpus/queries/qrels, or pairs file) for the before/after table;
    default: the held-out test split of ``data``."""

    def __post_init__(self) -> None:
        def refuse(name: str, value: Any, allowed: str) -> None:
            raise EmbtuneError(f"training config: {name}={value!r} is not allowed: {allowed}")

        if not self.data:
            refuse("data", self.data, "give a file, a dataset folder, labels:COLLECTION or bundled:catalogue")
        if not self.output_dir:
            refuse("output_dir", self.output_dir, "give a folder for the trained model")
        if self.loss not in LOSSES:
            refuse("loss", self.loss, ", ".join(LOSSES))
        if self.data_format not in FORMATS:
            refuse("data_format", self.data_format, ", ".join(FORMATS))
        if self.precision not in PRECISIONS:
            refuse("precision", self.precision, ", ".join(PRECISIONS))
        if self.scheduler not in SCHEDULERS:
            refuse("scheduler", self.scheduler, ", ".join(SCHEDULERS))
        for name in ("batch_size", "gradient_accumulation_steps", "max_seq_length", "mini_batch_size", "lora_r",
                     "lora_alpha", "save_total_limit"):
            if getattr(self, name) is not None and int(getattr(self, name)) <= 0:
                refuse(name, getattr(self, name), "a positive whole number")
        if self.loss_scale is not None and self.loss_scale <= 0:
            refuse("loss_scale", self.loss_scale, "a positive number (mnrl's default is 20)")
        if not self.checkpoint_minutes > 0:
            refuse("checkpoint_minutes", self.checkpoint_minutes, "a positive number of minutes")
        if not 0 <= self.forgetting_threshold <= 100:
            refuse("forgetting_threshold", self.forgetting_threshold, "NDCG@10 points in 0..100 (default 1)")
        if self.epochs is not None and self.epochs <= 0:
            refuse("epochs", self.epochs, "a positive number")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            refuse("learning_rate", self.learning_rate, "a number between 0 and 1 (e.g. 2e-5)")
        if not 0 <= self.warmup_ratio < 1:
            refuse("warmup_ratio", self.warmup_ratio, "a number in [0, 1)")
        if not 0 <= self.relevance_threshold <= 1:
            refuse("relevance_threshold", self.relevance_threshold, "a number in 0..1")
        if (self.augment_typos or 0) < 0 or self.hard_negatives < 0:
            refuse("augment_typos/hard_negatives", (self.augment_typos, self.hard_negatives), "0 or more")
        if not 0 <= self.negative_margin < 1:
            refuse("negative_margin", self.negative_margin, "a number in [0, 1)")
        if self.matryoshka_dims is None:
            if self.matryoshka_weights:
                refuse("matryoshka_weights", self.matryoshka_weights, "weights need matryoshka_dims given with them")
            return
        dims = [int(d) for d in self.matryoshka_dims]
        if any(d <= 0 for d in dims) or len(set(dims)) != len(dims):
            refuse("matryoshka_dims", self.matryoshka_dims, "distinct positive dimensions, e.g. [384, 256, 128, 64]")
        weights = [float(w) for w in self.matryoshka_weights]
        if weights and (len(weights) != len(dims) or any(w <= 0 for w in weights)):
            refuse("matryoshka_weights", self.matryoshka_weights,
                   f"{len(dims)} positive weights, one per Matryoshka dimension")
        order = sorted(range(len(dims)), key=lambda i: -dims[i])
        self.matryoshka_dims = [dims[i] for i in order]
        self.matryoshka_weights = [weights[i] for i in order] if weights else []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(payload) - known)
        if unknown:
            raise EmbtuneError(f"training config: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        missing = [name for name in ("data", "output_dir") if name not in payload]
        if missing:
            raise EmbtuneError(f"training config: {missing[0]!r} is required")
        return cls(**payload)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainingConfig:
        from core.data.formats import read_json_file

        return cls.from_dict(read_json_file(path))
