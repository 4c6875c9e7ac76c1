"""Fine-tuning: sentence-transformers' trainer, wrapped so a run is measured, recorded and safe.

``train(config)`` loads and validates the data, splits it by group, trains with
``SentenceTransformerTrainer`` (its losses, Matryoshka, NO_DUPLICATES batches, bf16, DDP,
checkpoints and resume come from there), keeps the best epoch by a validation metric, and
ends with the before/after table on the held-out test split plus the forgetting check on
the bundled general set. The same call runs unchanged under ``torchrun``/``accelerate``:
only rank 0 writes the model and the run record.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.data.split import split_by_group
from core.data.training_data import (
    column_prompts,
    group_column_for,
    load_training_data,
    loss_dataset,
    retrieval_set_for,
)
from core.errors import EmbtuneError
from core.evaluation import RetrievalSet, load_retrieval_set, metric_name
from core.progress import CancelToken
from core.training.anchor import stored_vectors, with_anchor
from core.training.arguments import training_arguments
from core.training.callbacks import CheckpointTimer, ProgressBridge, TrainingProgressCallback
from core.training.config import TrainingConfig
from core.training.examples import augmented_training_frame
from core.training.gate import decide
from core.training.heldout import TEST_SET_FOLDER, split_queries, test_set_folder
from core.training.losses import build_loss, choose_loss
from core.training.measure import as_embedder as _as_embedder
from core.training.measure import before_after, forgetting_check, overfitting_warnings, validation_evaluator
from core.training.model import device_and_precision, load_trainable, model_dimension
from core.training.prefix_axes import align_prefixes
from core.training.preflight import (
    NEW,
    REPLACE,
    RUN_FILE,
    TAKEOVER,
    base_model_spec,
    check_output_dir,
    require_model_space,
    run_row_mode,
)
from core.training.recipes import apply_recipe, resolve_matryoshka_dims
from core.training.run_record import RunRecorder, stop_on_signals
from storage.workspace import disk_full_error, write_error

logger = logging.getLogger(__name__)

NEGATIVES_FILE = "mined_negatives.jsonl"


@dataclass
class TrainingResult:
    run_name: str
    status: str
    output_dir: str
    data_format: str
    loss: str
    split_sizes: dict[str, int]
    data_report: dict[str, Any]
    train_seconds: float = 0.0
    epoch_metrics: list[dict[str, Any]] = field(default_factory=list)
    before_after: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    forgetting: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    mined_negatives: list[dict[str, Any]] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    global_steps: int = 0
    gate: dict[str, Any] = field(default_factory=dict)
    """The gate's decision (``GateDecision.to_dict()``): status, verdict, reason and figures."""
    resumed_from: str | None = None
    prefix_axes: dict[str, Any] = field(default_factory=dict)
    """Whether the principal axes were added after training (``PrefixAxesOutcome.to_dict()``)."""
    splits: dict[str, Any] = field(default_factory=dict)
    """The queries of each split (``core.training.heldout``): what later evaluations check for overlap."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train(
    config: TrainingConfig,
    *,
    db: Any = None,
    progress: TrainingProgressCallback | None = None,
    cancel: CancelToken | None = None,
    show_progress: bool = True,
    notice: Callable[[str], None] | None = None,
    queued: bool = False,
) -> TrainingResult:
    """Run one fine-tune end to end; ``db`` (a ``storage.db.Database``) records it when given.

    The run ends ``finished``, ``not proven`` or ``rejected`` by the gate (``core.training.gate``),
    ``cancelled`` on the token or SIGTERM/Ctrl-C (after a checkpoint; the token says which signal);
    ``notice`` hears the few lines a user must see, such as which checkpoint a resume starts from.
    Mistakes — in the data, the run's name, the base model, its dimensions, the test set, the output
    folder or its free space — are refused before a run is recorded (``core.training.preflight``);
    from then on the run's row says what it is doing. ``queued``: the launcher queued this run's row.
    """
    output_dir = Path(config.output_dir).expanduser().resolve()
    check_output_dir(output_dir, config)
    runs = _run_store(db) if int(os.environ.get("RANK", "0")) == 0 else None
    run_name = config.run_name or _resumed_run_name(config, output_dir, db) or \
        f"{output_dir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    row_mode = run_row_mode(runs, run_name, config, output_dir, queued=queued) if runs is not None else NEW
    config = base_model_spec(config, db)
    data = load_training_data(config.data, data_format=config.data_format, corpus=config.corpus,
                              corpus_text_column=config.corpus_text_column, db=db)
    config = apply_recipe(config, data.data_format)
    loss_name = choose_loss(config.loss, data.data_format)
    group = group_column_for(data.frame, config.group_by)
    splits = split_by_group(data.frame, group, validation=config.validation_fraction, test=config.test_fraction,
                            seed=config.seed, source=config.data)
    result = TrainingResult(run_name, "running", str(output_dir), data.data_format, loss_name, splits.sizes(),
                            data.report.to_dict(), warnings=list(data.report.warnings),
                            splits=split_queries(splits, data.data_format))
    retrieval = data.data_format != "classes"
    # classes carry no queries to hold out: such a run is judged on --test-data when it is given
    test_set = _test_set(config, splits.test if retrieval else None,
                         data.corpus if retrieval or config.corpus else None)
    device, precision = device_and_precision(config, result.warnings)
    model = load_trainable(config, device)
    full_dim = model_dimension(model)
    config = config.replace(matryoshka_dims=resolve_matryoshka_dims(config, data.data_format, full_dim))
    too_large = [d for d in config.matryoshka_dims if d > full_dim]
    if too_large:
        raise EmbtuneError(f"matryoshka_dims {too_large} are larger than the model's dimension {full_dim}")
    require_model_space(model, output_dir, config)
    recorder = None
    if runs is not None:
        runs.start(run_name, takeover=row_mode == TAKEOVER, replace=row_mode == REPLACE,
                   collection_name=config.collection, config=config.to_dict(),
                   dataset_fingerprint=_fingerprint(data.frame), model_path=str(output_dir), splits=result.splits)
        recorder = RunRecorder(runs, run_name)
        recorder.register_process()
        recorder.start()
    cancel = cancel or CancelToken()
    try:
        with stop_on_signals(cancel):
            config = _train_and_measure(result, config, data, splits, output_dir, model=model, test_set=test_set,
                                        device=device, precision=precision, runs=runs, recorder=recorder,
                                        progress=progress, cancel=cancel, show_progress=show_progress, notice=notice)
    except Exception as exc:
        if runs is not None:
            runs.update(run_name, status="failed", error=f"{type(exc).__name__}: {exc}")
        full = disk_full_error(exc, output_dir)
        if full is not None:
            raise full from exc
        raise
    finally:
        if recorder is not None:
            recorder.stop()
    if runs is not None:
        runs.update(run_name, status=result.status, epoch_metrics=result.epoch_metrics, config=config.to_dict(),
                    splits=result.splits,
                    error=(result.gate or {}).get("reason") if result.status == "rejected" else None,
                    before_after={"comparisons": result.before_after, "table": result.table,
                                  "forgetting": result.forgetting, "warnings": result.warnings, "gate": result.gate,
                                  "prefix_axes": result.prefix_axes})
    return result


def _train_and_measure(result: TrainingResult, config: TrainingConfig, data: Any, splits: Any, output_dir: Path, *,
                       model: Any, test_set: RetrievalSet | None, device: str, precision: str, runs: Any,
                       recorder: RunRecorder | None, progress: TrainingProgressCallback | None,
                       cancel: CancelToken, show_progress: bool, notice: Callable[[str], None] | None
                       ) -> TrainingConfig:
    """Train, then (rank 0) measure, gate and save; ``result`` carries the outcome back, the config
    returned has every recipe value resolved."""
    from sentence_transformers import SentenceTransformerTrainer

    dims = config.matryoshka_dims or [model_dimension(model)]
    retrieval = data.data_format != "classes"
    validation_set = retrieval_set_for(splits.validation, data.corpus, "validation") if retrieval and \
        len(splits.validation) else None
    metric_for_best = config.metric_for_best if config.metric_for_best != "auto" else \
        metric_name(min(dims), "ndcg@10")
    checkpoints = output_dir.parent / f".{output_dir.name}.checkpoints"
    evaluate_epochs = config.eval_each_epoch and validation_set is not None
    args = training_arguments(config, result.loss, checkpoints, precision, device, len(splits.train),
                               evaluate_epochs, metric_for_best, show_progress)
    if recorder is not None and (config.hard_negatives or config.augment_typos):
        recorder.phase("preparing the training data")
    train_frame, mined = augmented_training_frame(splits.train, data.corpus, config, model, result.loss)
    result.mined_negatives = [m.to_dict() for m in mined]
    if mined:
        flagged = sum(1 for m in mined if m.flag)
        used = "used" if config.use_flagged_negatives else "not used"
        result.warnings.append(f"hard negatives: {len(mined)} mined, {flagged} flagged as too close to the "
                               f"positive or labelled relevant ({used})")
    evaluator = validation_evaluator(validation_set, dims, metric_for_best) if evaluate_epochs else None
    bridge = ProgressBridge(progress=progress, cancel=cancel)
    if recorder is not None:
        bridge.on_update = recorder.record
    train_dataset = loss_dataset(train_frame, result.loss, data.data_format, config.relevance_threshold)
    loss = build_loss(result.loss, model, matryoshka_dims=config.matryoshka_dims,
                      mini_batch_size=config.mini_batch_size, matryoshka_weights=config.matryoshka_weights,
                      scale=config.loss_scale)
    prompts = column_prompts(getattr(model, "prompts", None), train_dataset.column_names)
    if retrieval and config.similarity_anchor:
        train_dataset, loss, prompts = with_anchor(model, train_dataset, loss, prompts, list(data.corpus.values()),
                                                   weight=config.similarity_anchor, seed=config.seed,
                                                   known=stored_vectors(config.collection, runs and runs.db, model))
    args.prompts = prompts or None
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator,
        callbacks=[bridge, CheckpointTimer(config.checkpoint_minutes * 60)],
    )
    if not show_progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints every log dict when the bar is off
    result.resumed_from = _resume_checkpoint(config, checkpoints, notice)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=result.resumed_from)
    result.train_seconds = time.perf_counter() - started
    result.rank, result.world_size = trainer.args.process_index, trainer.args.world_size
    result.global_steps = int(trainer.state.global_step)
    result.epoch_metrics = bridge.epoch_metrics
    result.warnings += overfitting_warnings(bridge.epoch_metrics, f"eval_{metric_for_best}")
    if cancel.cancelled:
        result.status = "cancelled"  # the checkpoint stays for --resume
        return config
    if not trainer.is_world_process_zero():
        result.status = "finished"
        return config
    if config.principal_axes and retrieval and len(dims) > 1:
        if recorder is not None:
            recorder.phase("fitting the prefixes' principal axes")
        result.prefix_axes = align_prefixes(
            model, _as_embedder(model, str(output_dir)), queries=list(dict.fromkeys(splits.train["anchor"])),
            validation=validation_set, dimension=min(dims)).to_dict()
    if recorder is not None:
        recorder.phase("evaluating")
    tuned = _as_embedder(model, str(output_dir))
    primary = before_after(result, config, tuned, test_set, dims, device, runs, metric_for_best) \
        if test_set is not None else None
    forgetting = forgetting_check(result, config, tuned, device) if config.forgetting_check else None
    decision = decide(primary, metric=metric_for_best, forgetting=forgetting,
                      forgetting_threshold=config.forgetting_threshold / 100, accept_worse=config.accept_worse)
    result.gate, result.status = decision.to_dict(), decision.status
    if recorder is not None:
        recorder.phase("saving")
    if test_set is not None:
        result.splits["test_set"] = str(test_set_folder(output_dir))
    _save_model(model, output_dir, config, result, test_set)
    shutil.rmtree(checkpoints, ignore_errors=True)
    return config


def _resume_checkpoint(config: TrainingConfig, checkpoints: Path, notice: Callable[[str], None] | None) -> str | None:
    """The newest complete checkpoint ``--resume`` continues from, said out loud either way.

    The trainer writes a checkpoint in place and its ``trainer_state.json`` last, so a process
    killed while saving leaves a folder without it: that one is skipped (and said so).
    """
    if not config.resume:
        return None
    found = sorted(((int(folder.name.rsplit("-", 1)[1]), folder) for folder in checkpoints.glob("checkpoint-*")
                    if folder.is_dir() and folder.name.rsplit("-", 1)[1].isdigit()), reverse=True)
    messages = [f"skipping {folder.name}: incomplete (the process ended while saving it)"
                for _, folder in found if not (folder / "trainer_state.json").is_file()]
    complete = [(step, folder) for step, folder in found if (folder / "trainer_state.json").is_file()]
    messages.append(f"resuming from {complete[0][1].name} (step {complete[0][0]}) in {checkpoints}" if complete
                    else f"no checkpoint in {checkpoints}: starting from step 0")
    for message in messages:
        logger.warning(message)
        if notice is not None:
            notice(message)
    return str(complete[0][1]) if complete else None


def _resumed_run_name(config: TrainingConfig, output_dir: Path, db: Any) -> str | None:
    """A resumed run keeps its name (and its row): the newest run that was writing to the same folder."""
    if not (config.resume and db is not None):
        return None
    for run in _run_store(db).list():
        if run.model_path and Path(run.model_path) == output_dir and run.status not in ("finished", "not proven",
                                                                                          "rejected", "done"):
            return run.name
    return None


# -- pieces ------------------------------------------------------------------------------------


def _test_set(config: TrainingConfig, test_split: Any | None, corpus: dict[str, str] | None) -> RetrievalSet | None:
    if config.test_data:
        return load_retrieval_set(config.test_data, corpus=corpus if not Path(config.test_data).is_dir() else None)
    return retrieval_set_for(test_split, corpus, "test") if test_split is not None and len(test_split) else None


def _save_model(model: Any, output_dir: Path, config: TrainingConfig, result: TrainingResult,
                test_set: RetrievalSet | None) -> None:
    """Write to a sibling temp folder, then swap it in, so a crash or a full disk never leaves half a model. The
    test split the gate judged goes with it, so the run can be evaluated on it again."""
    staging = output_dir.parent / f".{output_dir.name}.saving-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save(str(staging))
        if test_set is not None:
            test_set.write_folder(staging / TEST_SET_FOLDER)
        (staging / RUN_FILE).write_text(json.dumps({"config": config.to_dict(), "result": result.to_dict()},
                                                   ensure_ascii=False, indent=2), encoding="utf-8")
        (staging / "before_after.md").write_text(result.table + "\n", encoding="utf-8")
        if result.mined_negatives:
            with open(staging / NEGATIVES_FILE, "w", encoding="utf-8") as handle:
                for mined in result.mined_negatives:
                    handle.write(json.dumps(mined, ensure_ascii=False) + "\n")
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise write_error(exc, f"the trained model {output_dir}") from None
        raise
    retired = output_dir.parent / f".{output_dir.name}.retired-{os.getpid()}"
    if output_dir.exists():
        os.replace(output_dir, retired)
    os.replace(staging, output_dir)
    shutil.rmtree(retired, ignore_errors=True)


def _run_store(db: Any) -> Any:
    if db is None:
        return None
    from storage.runs import RunStore

    return RunStore(db)


def _fingerprint(frame: Any) -> str:
    import hashlib

    return hashlib.sha256(frame.to_csv(index=False).encode("utf-8")).hexdigest()


__all__ = ["RUN_FILE", "TrainingResult", "train"]
