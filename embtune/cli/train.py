"""``embtune train`` and ``embtune runs``: fine-tune with the gate, and see every run's honest state.

Every documented recipe option is a flag (a CONFIG.json is optional; flags override it). Values
a user leaves out come from the data format's recipe (``core.training.recipes``). The command
ends with the gate's decision; a rejected run exits with status 3 so scripts can stop on it, a run
stopped by Ctrl-C or SIGTERM with 130 or 143 (after recording ``cancelled at step N``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from core.errors import EmbtuneError
from core.progress import format_duration
from embtune.cli.common import split_ints

REJECTED_EXIT = 3

# flag name → TrainingConfig field, for options that map one to one
_FIELDS = ("data", "output_dir", "model", "corpus", "corpus_text_column", "data_format", "loss", "loss_scale",
           "similarity_anchor", "principal_axes",
           "epochs", "batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_ratio", "scheduler",
           "precision", "max_seq_length", "mini_batch_size", "metric_for_best", "seed", "group_by",
           "validation_fraction", "test_fraction", "relevance_threshold", "augment_typos", "hard_negatives",
           "negative_margin", "negatives_file", "lora", "lora_r", "lora_alpha", "max_steps", "checkpoint_minutes",
           "collection", "run_name", "device", "forgetting_data", "forgetting_threshold", "test_data")


def train_command(
    ctx: typer.Context,
    config_file: Annotated[Path | None, typer.Argument(help="TrainingConfig JSON (flags override it)")] = None,
    data: Annotated[str | None, typer.Option("--data", help="file, HF dataset folder, labels:COLLECTION or "
                                             "bundled:catalogue")] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir")] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="items that item_id columns name")] = None,
    corpus_text_column: Annotated[str | None, typer.Option("--corpus-text-column")] = None,
    data_format: Annotated[str | None, typer.Option("--data-format", help="pairs, triplets, scored, classes "
                                                    "(default: from the columns)")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="default: the format's recipe")] = None,
    loss_scale: Annotated[float | None, typer.Option("--loss-scale", help="mnrl similarity scale (20)")] = None,
    similarity_anchor: Annotated[float | None, typer.Option(
        "--similarity-anchor", help="weight of the loss keeping the base model's cosines between corpus items "
        "(protects search outside the domain; 0: off)")] = None,
    matryoshka_dims: Annotated[str | None, typer.Option("--matryoshka-dims", help="e.g. 384,256,128,64; "
                                                        "'none' for no Matryoshka")] = None,
    principal_axes: Annotated[bool | None, typer.Option(
        "--principal-axes/--no-principal-axes", help="after a Matryoshka run, order the output by the domain's "
        "principal axes when validation at the smallest dimension does not fall (no full-width cosine changes; "
        "default: on)")] = None,
    matryoshka_weights: Annotated[str | None, typer.Option("--matryoshka-weights",
                                                           help="one per dimension, e.g. 1,1,2,4")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    gradient_accumulation_steps: Annotated[int | None, typer.Option("--gradient-accumulation-steps")] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr", "--learning-rate")] = None,
    warmup_ratio: Annotated[float | None, typer.Option("--warmup-ratio")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="auto, fp32, bf16, fp16")] = None,
    max_seq_length: Annotated[int | None, typer.Option("--max-seq-length")] = None,
    mini_batch_size: Annotated[int | None, typer.Option("--mini-batch-size", help="cached_mnrl chunk")] = None,
    metric_for_best: Annotated[str | None, typer.Option("--metric-for-best", help="also the gate's metric")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    group_by: Annotated[str | None, typer.Option("--group-by")] = None,
    validation_fraction: Annotated[float | None, typer.Option("--validation-fraction")] = None,
    test_fraction: Annotated[float | None, typer.Option("--test-fraction")] = None,
    relevance_threshold: Annotated[float | None, typer.Option("--relevance-threshold")] = None,
    augment_typos: Annotated[int | None, typer.Option("--augment-typos", help="typo variants per query")] = None,
    hard_negatives: Annotated[int | None, typer.Option("--hard-negatives", help="mined per pair")] = None,
    negative_margin: Annotated[float | None, typer.Option("--negative-margin")] = None,
    use_flagged_negatives: Annotated[bool, typer.Option("--use-flagged-negatives")] = False,
    negatives_file: Annotated[str | None, typer.Option("--negatives-file")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora")] = None,
    lora_r: Annotated[int | None, typer.Option("--lora-r")] = None,
    lora_alpha: Annotated[int | None, typer.Option("--lora-alpha")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="stop after N steps (default: the epochs "
                                                                       "decide)")] = None,
    checkpoint_minutes: Annotated[float | None, typer.Option("--checkpoint-minutes",
                                                             help="checkpoint at least this often (5)")] = None,
    collection: Annotated[str | None, typer.Option("--collection")] = None,
    run_name: Annotated[str | None, typer.Option("--run-name")] = None,
    test_data: Annotated[str | None, typer.Option("--test-data", help="retrieval set for before/after")] = None,
    forgetting_data: Annotated[str | None, typer.Option("--forgetting-data")] = None,
    forgetting_threshold: Annotated[float | None, typer.Option("--forgetting-threshold",
                                                               help="NDCG@10 points (1)")] = None,
    no_forgetting_check: Annotated[bool, typer.Option("--no-forgetting-check")] = False,
    accept_worse: Annotated[bool, typer.Option("--accept-worse", help="let a run the gate rejects finish "
                                               "(recorded)")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an output folder that is not ours, or an "
                                            "ended run of the same --run-name (its record goes)")] = False,
    device: Annotated[str | None, typer.Option("--device")] = None,
    trainer_arg: Annotated[list[str] | None, typer.Option(
        "--trainer-arg", help="KEY=VALUE: any other SentenceTransformerTrainingArguments field, e.g. "
        "weight_decay=0.01 (repeatable; VALUE read as YAML: numbers, true/false, lists)")] = None,
) -> None:
    """Fine-tune an embedder; the run ends finished, not proven or rejected by its held-out gate."""
    from core.progress import CancelToken
    from core.training.callbacks import console_progress
    from core.training.config import TrainingConfig
    from core.training.train import train

    flags = dict(locals())
    payload: dict[str, Any] = TrainingConfig.from_json(config_file).to_dict() if config_file is not None else {}
    payload.update({name: flags[name] for name in _FIELDS if flags[name] is not None})
    if matryoshka_dims is not None:
        payload["matryoshka_dims"] = [] if matryoshka_dims.strip().lower() == "none" else \
            split_ints(matryoshka_dims, "--matryoshka-dims")
    if matryoshka_weights is not None:
        try:
            payload["matryoshka_weights"] = [float(w) for w in matryoshka_weights.split(",") if w.strip()]
        except ValueError:
            raise EmbtuneError(f"--matryoshka-weights {matryoshka_weights!r}: numbers separated by commas") from None
    for name in ("resume", "overwrite", "accept_worse", "use_flagged_negatives"):
        payload[name] = flags[name] or payload.get(name, False)
    if no_forgetting_check:
        payload["forgetting_check"] = False
    if trainer_arg:
        payload["trainer_args"] = {**payload.get("trainer_args", {}), **_key_values(trainer_arg)}
    config = TrainingConfig.from_dict(payload)
    interactive = sys.stderr.isatty()
    cancel = CancelToken()
    result = train(config, db=ctx.obj.database(), show_progress=interactive, cancel=cancel,
                   progress=None if interactive else console_progress(lambda line: typer.echo(line, err=True)),
                   notice=lambda line: typer.echo(line, err=True))
    _report(result)
    if result.status == "rejected":
        raise typer.Exit(REJECTED_EXIT)
    if result.status == "cancelled":  # the work was not done: exit as the signal that stopped it would
        raise typer.Exit(128 + cancel.signal if cancel.signal else 1)


def _key_values(pairs: list[str]) -> dict[str, Any]:
    import yaml

    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise EmbtuneError(f"--trainer-arg {pair!r}: write KEY=VALUE, e.g. weight_decay=0.01")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed[key.strip()] = value
    return parsed


def _report(result: Any) -> None:
    from core.training.gate import GateDecision

    where = f" [rank {result.rank}/{result.world_size}]" if result.world_size > 1 else ""
    typer.echo(f"run {result.run_name}{where}: trained {result.train_seconds:.0f} s, {result.global_steps} steps "
               f"({result.data_format} data, {result.loss} loss, splits {result.split_sizes})")
    if result.rank != 0:
        return  # rank 0 reports and writes
    if result.prefix_axes:
        typer.echo(result.prefix_axes["reason"])
    if result.table:
        typer.echo("\nbefore → after on the test split:\n" + result.table)
    if result.by_kind:
        typer.echo("\nrecall@3 by query kind (before → after):")
        for kind, before in result.by_kind["before"].items():
            typer.echo(f"  {kind:<16} {before:.3f} → {result.by_kind['after'].get(kind, 0.0):.3f}")
    if result.forgetting:
        f = result.forgetting
        interval = f" [{f['ci_low'] * 100:+.2f}, {f['ci_high'] * 100:+.2f}]" if "ci_low" in f else ""
        typer.echo(f"\nforgetting check ({f['data']}): NDCG@10 {f['ndcg@10_before']:.4f} → {f['ndcg@10_after']:.4f} "
                   f"({f['delta'] * 100:+.2f} points{interval})")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if result.status == "cancelled":
        typer.echo(f"\ncancelled at step {result.global_steps}: the checkpoint is kept; --resume continues")
        return
    if result.gate:
        typer.echo(f"\ngate: {GateDecision.from_dict(result.gate).summary()}")
    typer.echo(f"model: {result.output_dir}" + (" (kept for inspection; not served unless named or accepted with "
                                               "--accept-worse)" if result.status == "rejected" else ""))


# -- embtune runs -------------------------------------------------------------------------------

runs_app = typer.Typer(help="Training runs: list them (the default), show one.", invoke_without_command=True)


@runs_app.callback()
def list_runs(
    ctx: typer.Context,
    collection: Annotated[str | None, typer.Option("--collection", help="only runs trained for it")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Runs, newest first: name, collection, state with reason, step, duration, verdict, Δ primary metric."""
    if ctx.invoked_subcommand is not None:
        return
    from core.training.runs import refresh_runs, run_summary

    rows = [run_summary(run) for run in refresh_runs(ctx.obj.database())
            if collection is None or run.collection_name == collection]
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no training runs yet: embtune train --data FILE --output-dir DIR")
        return
    typer.echo(f"{'name':<32} {'collection':<14} {'step':>11} {'duration':>9} {'verdict':<11} {'Δ':>8}  state")
    for row in rows:
        step = f"{row['step']}/{row['total_steps']}" if row["total_steps"] else str(row["step"])
        duration = format_duration(row["duration_s"])
        delta = f"{row['delta']:+.4f}" if row["delta"] is not None else "–"
        typer.echo(f"{row['name']:<32} {row['collection'] or '–':<14} {step:>11} {duration:>9} "
                   f"{row['verdict'] or '–':<11} {delta:>8}  {row['state']}")


@runs_app.command("show")
def show_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="run name, run:NAME, or run:latest (the run search serves)")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One run's record: state, gate decision with figures, config, progress, before/after table."""
    from core.training.runs import gate_of, newest_servable_run, refresh_runs, run_summary

    db = ctx.obj.database()
    bare = name[4:] if name.startswith("run:") else name
    runs = refresh_runs(db)
    run = newest_servable_run(db) if bare == "latest" else next((r for r in runs if r.name == bare), None)
    if run is None:
        raise EmbtuneError("run:latest: no finished training run (rejected runs are only used by name)"
                           if bare == "latest" else f"no training run named {bare!r} (embtune runs lists them)")
    gate = gate_of(run)
    record = {**run_summary(run), "gate": gate.to_dict() if gate else None, "config": run.config,
              "progress": {k: v for k, v in (run.progress or {}).items() if k != "history"},
              "epoch_metrics": run.epoch_metrics, "error": run.error,
              "before_after": {k: v for k, v in (run.before_after or {}).items() if k != "comparisons"}}
    if as_json:
        typer.echo(json.dumps(record, ensure_ascii=False, indent=2, default=str))
        return
    typer.echo(f"run {run.name}: {record['state']}")
    typer.echo(f"  {'collection':<12} {record['collection'] or '–'}")
    typer.echo(f"  {'step':<12} {record['step']}/{record['total_steps'] or '?'}")
    typer.echo(f"  {'started':<12} {record['started_at'] or '–'}")
    typer.echo(f"  {'duration':<12} {format_duration(record['duration_s'])}")
    typer.echo(f"  {'model':<12} {record['model_path'] or '–'}")
    if gate is not None:
        typer.echo(f"  gate         {gate.summary()}")
        if gate.forgetting:
            f = gate.forgetting
            typer.echo(f"  forgetting   {f['data']}: NDCG@10 {f['before']:.4f} → {f['after']:.4f} "
                       f"({f['delta'] * 100:+.2f} points, 95% CI [{f['ci_low'] * 100:+.2f}, "
                       f"{f['ci_high'] * 100:+.2f}], threshold −{f['threshold'] * 100:g})")
    if (run.before_after or {}).get("table"):
        typer.echo("\n" + run.before_after["table"])
    typer.echo("\nconfig: " + json.dumps(run.config, ensure_ascii=False))
