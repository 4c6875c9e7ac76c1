"""Measuring models: eval, export, compare-embedders; mined negatives and LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.errors import EmbtuneError
from embtune.cli.common import Context, at_least, split_ints, writable_output

app = typer.Typer()


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="pairs file (query, item/item_id, score), a folder with "
                                       "corpus/queries/qrels CSVs, bundled:catalogue|general, or run:NAME (the "
                                       "test split that run was judged on)")],
    models: Annotated[list[str], typer.Option("--model", help="model spec or run:NAME (repeat to compare)")],
    dims: Annotated[str | None, typer.Option("--dims", help="Matryoshka dimensions, e.g. 384,256,128,64")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="collection or id,text file: the items searched "
                                               "(item_id refers to them; item texts are added)")] = None,
    corpus_text_column: Annotated[str, typer.Option("--corpus-text-column")] = "text",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report (per-query values "
                                                  "included) here; Markdown beside it")] = None,
    regressions_limit: Annotated[int, typer.Option("--regressions", help="list the N queries the last model "
                                                   "lost most on", callback=at_least(0))] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
    exclude_training_queries: Annotated[bool, typer.Option(
        "--exclude-training-queries", help="leave out the queries any evaluated run trained on (its training and "
        "validation splits), for every model")] = False,
) -> None:
    """Retrieval metrics per dimension for each model; paired intervals between them."""
    from core.data.training_data import corpus_items
    from core.evaluation import run_evaluation
    from storage.workspace import atomic_write_json, atomic_write_text

    writable_output(json_out, "--json")
    db = ctx.obj.database()
    items = corpus_items(corpus, corpus_text_column, db=db) if corpus else None
    report = run_evaluation(data, models, dimensions=split_ints(dims, "--dims") or None, corpus=items, db=db,
                            device=device, regressions_limit=regressions_limit,
                            exclude_training_queries=exclude_training_queries)
    typer.echo(f"evaluated {report.queries} queries against {report.corpus_items} corpus items"
               + (f" ({report.corpus_note})" if report.corpus_note else ""), err=True)
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(report.markdown())
    for regression in report.regressions:
        moves = ", ".join(f"{item}: {a or '-'}→{b or '-'}" for item, (a, b) in regression.relevant_moves.items())
        typer.echo(f"regression {regression.query_id} {regression.query!r}: {regression.value_a:.3f} → "
                   f"{regression.value_b:.3f}; relevant ranks {moves}")
        for label, ranking in (("A", regression.top_a), ("B", regression.top_b)):
            typer.echo(f"    {label} top-5: " + "; ".join(f"{item} {regression.item_texts.get(item, '')}".strip()
                                                         for item, _ in ranking))
    if json_out is not None:
        atomic_write_json(json_out, report.to_dict())
        atomic_write_text(json_out.with_suffix(".md"), report.markdown())
        typer.echo(f"written: {json_out} and {json_out.with_suffix('.md')}")


@app.command("export")
def export_command(
    ctx: typer.Context,
    model_or_run: Annotated[str, typer.Argument(help="model spec (default, a sentence-transformers folder) or a "
                                                "training run's name (run:NAME)")],
    export_format: Annotated[str, typer.Option("--format", help="onnx or openvino")],
    quantize: Annotated[str | None, typer.Option("--quantize", help="int8: onnx dynamic, openvino static "
                                                 "(calibrated on --calibration)")] = None,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="table with a text column to calibrate "
                                                     "openvino int8 on (default: the run's training texts, else the "
                                                     "evaluation corpus)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="retrieval folder or pairs file to evaluate on "
                                              "(default: the run's test split, else the bundled catalogue)")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="collection (or id,text file) that --data's "
                                               "item_id refers to")] = None,
    dims: Annotated[str | None, typer.Option("--dims", help="dimensions to compare (default: the run's Matryoshka "
                                             "dimensions, else the full one)")] = None,
    collection: Annotated[str | None, typer.Option("--collection", help="switch this collection to the exported "
                                                   "model when the loss is within the tolerance")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="export again even if the files exist")] = False,
    tolerance: Annotated[float, typer.Option("--tolerance", help="NDCG@10 points the export may lose at any "
                                             "dimension before it is refused")] = 0.5,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """Export a model to ONNX or OpenVINO (files saved into the model folder), then compare it with the original:
    NDCG@10 per dimension and speed, recorded with the run."""
    from core.data.training_data import corpus_items
    from core.export import export_model
    from storage.workspace import atomic_write_json

    if not 0 <= tolerance <= 100:
        raise EmbtuneError(f"--tolerance {tolerance} must be between 0 and 100 NDCG@10 points")
    writable_output(json_out, "--json")
    context: Context = ctx.obj
    db = context.database()
    report = export_model(model_or_run, format=export_format, quantize=quantize, calibration=calibration, data=data,
                          corpus=corpus_items(corpus, db=db) if corpus else None,
                          dimensions=split_ints(dims, "--dims") or None, collection=collection, overwrite=overwrite,
                          tolerance=tolerance / 100, db=db, workspace=context.workspace())
    typer.echo(f"{'reused' if report.reused else 'exported'} {report.backend}: {report.model_file}"
               + ("" if report.reused else f" ({report.export_seconds:.1f} s)"))
    if report.calibration:
        typer.echo(f"calibrated on {report.calibration}")
    typer.echo(f"\n{report.backend} vs torch on {report.data_name}:\n{report.table()}")
    typer.echo(f"\nspeed: {report.speed_exported:.1f} vs {report.speed_original:.1f} sentences/s "
               f"({report.speed_ratio:.2f}× torch, batch 64)")
    if report.collection_switched:
        typer.echo(f"collection {report.collection!r} now serves {report.spec}")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"\nload it with --model {report.spec}")
    if json_out is not None:
        atomic_write_json(json_out, report.to_dict())
        typer.echo(f"written: {json_out}")


@app.command("compare-embedders")
def compare_embedders_command(
    data: Annotated[Path, typer.Option("--data", help="labelled CSV/JSONL/Parquet file")],
    models: Annotated[list[str], typer.Option("--model", help="model spec (repeat to compare)")],
    label_column: Annotated[str, typer.Option("--label-column", help="column with each item's label")],
    text_column: Annotated[str | None, typer.Option("--text-column", help="column with texts")] = None,
    image_column: Annotated[str | None, typer.Option("--image-column", help="column with image paths (relative "
                                                     "to the file's folder)")] = None,
    device: Annotated[str, typer.Option("--device")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the result here")] = None,
) -> None:
    """Speed, memory, label discrimination and leave-one-out top-1/top-5 of several embedders on one set."""
    from core.compare_embedders import compare_embedders
    from storage.workspace import atomic_write_json

    writable_output(json_out, "--json")
    result = compare_embedders(data, models, label_column=label_column, text_column=text_column,
                               image_column=image_column, device=device)
    typer.echo(f"{result.items} {result.modality} items, {result.labels} labels "
               f"({result.evaluated_items} items with a same-label neighbour)\n")
    typer.echo(result.table())
    typer.echo("\nverdict: " + result.verdict())
    if json_out is not None:
        atomic_write_json(json_out, result.to_dict())
        typer.echo(f"written: {json_out}")


negatives_app = typer.Typer(help="Review mined hard negatives.", no_args_is_help=True)
adapters_app = typer.Typer(help="LoRA adapters: list and merge.", no_args_is_help=True)


@negatives_app.command("review")
def negatives_review_command(
    ctx: typer.Context,
    run_or_file: Annotated[str, typer.Argument(help="run name, run folder or mined_negatives.jsonl")],
    show_all: Annotated[bool, typer.Option("--all", help="list unflagged negatives too")] = False,
    marks: Annotated[list[str] | None, typer.Option("--mark", help="N=relevant or N=not_relevant "
                                                    "(N from the listing; repeatable)")] = None,
) -> None:
    """List the mined negatives flagged as suspicious; mark what a person decided."""
    from dataclasses import replace

    from core.adapters import adapter_folder
    from core.data.augment import load_reviewed_negatives, save_reviewed_negatives

    path = Path(run_or_file)
    target = str(path) if path.exists() else str(adapter_folder(run_or_file, ctx.obj.database())[0])
    mined = load_reviewed_negatives(target)
    for mark in marks or []:
        index, _, verdict = mark.partition("=")
        if not index.isdigit() or int(index) >= len(mined) or verdict not in ("relevant", "not_relevant"):
            raise EmbtuneError(f"--mark {mark!r} must be N=relevant or N=not_relevant with N in 0..{len(mined) - 1}")
        mined[int(index)] = replace(mined[int(index)], review=verdict)
    if marks:
        save_reviewed_negatives(target, mined)
    flagged = sum(1 for m in mined if m.flag)
    typer.echo(f"{len(mined)} mined negatives, {flagged} flagged, "
               f"{sum(1 for m in mined if m.review)} reviewed")
    for index, m in enumerate(mined):
        if show_all or m.flag or m.review:
            typer.echo(f"{index:>5}  {m.flag or 'clean':<18} {m.review or '-':<13} pos {m.positive_score:.3f} "
                       f"neg {m.negative_score:.3f}  {m.anchor!r} → {m.negative!r} (positive {m.positive!r})")


@adapters_app.command("list")
def adapters_list_command(ctx: typer.Context) -> None:
    """LoRA adapters from training runs: base, rank, size on disk, evaluation."""
    from core.adapters import list_adapters

    adapters = list_adapters(ctx.obj.database())
    if not adapters:
        typer.echo("no LoRA runs yet: embtune train ... --lora")
    for a in adapters:
        ndcg = f"{a.ndcg10_after:.4f}" if a.ndcg10_after is not None else "-"
        typer.echo(f"{a.run:<28} base={a.base} r={a.rank} alpha={a.alpha} size={a.size_bytes / 1024:.0f} KiB "
                   f"ndcg@10 after={ndcg} status={a.status}  {a.path}")


@adapters_app.command("merge")
def adapters_merge_command(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="run name or adapter folder")],
    out: Annotated[Path, typer.Option("--out", help="new folder for the merged model")],
    base: Annotated[str | None, typer.Option("--base", help="base model (default: the run's)")] = None,
) -> None:
    """Merge an adapter into its base: a plain sentence-transformers folder that loads without peft."""
    from core.adapters import merge_adapter

    typer.echo(f"merged model: {merge_adapter(run, out, db=ctx.obj.database(), base=base)}")
