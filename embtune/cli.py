"""The ``embtune`` command: a thin layer over ``core`` and ``storage``.

Each command parses its options, calls one core function and prints the result. A user
mistake (``EmbtuneError``) is printed as one ``error:`` line with exit code 1; anything else
is a bug and keeps its traceback. Heavy imports (torch, faiss) happen inside the commands
so ``embtune --help`` answers at once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from core.errors import EmbtuneError
from embtune.models_cli import models_app
from embtune.train_cli import runs_app, split_ints, train_command

app = typer.Typer(
    name="embtune",
    help="Adapt embedding models to your domain and prove the gain with numbers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


@dataclass
class Context:
    workspace_dir: str | None
    db_url: str | None

    def workspace(self) -> Any:
        from storage.workspace import Workspace

        return Workspace.open(self.workspace_dir)

    def database(self) -> Any:
        from storage.db import Database

        return Database(self.workspace().db_url(self.db_url))


@app.callback()
def _global_options(
    ctx: typer.Context,
    workspace: Annotated[str | None, typer.Option("--workspace", help="workspace folder (default: EMBTUNE_HOME "
                                                  "or ~/.embtune)")] = None,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL (default: EMBTUNE_DB or the workspace's "
                                           "SQLite file)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show library logs")] = False,
) -> None:
    _configure_logging(verbose)
    ctx.obj = Context(workspace, db)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s",
                        force=True)
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the per-load "Loading weights" bars
        for noisy in ("sentence_transformers", "transformers", "huggingface_hub", "faiss", "bitsandbytes"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


# Text models can be served by sentence-transformers' ONNX or OpenVINO backend (core/embedders/backends.py); the
# spec then carries it as a prefix (openvino:default), which is what a collection records.
BackendOption = Annotated[str | None, typer.Option("--backend", help="torch (default), onnx, onnx-int8, openvino or "
                                                   "openvino-int8: serve a text model on the CPU through "
                                                   "sentence-transformers' backend (same as an openvino:MODEL spec)")]


def _with_backend(model: str, backend: str | None) -> str:
    from core.embedders.backends import backend_spec

    return backend_spec(model, backend) if backend else model


@app.command("index")
def index_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet file (with --engine ray: or a folder of "
                                         "such shards)")],
    collection: Annotated[str, typer.Option("--collection", help="collection name")],
    text_column: Annotated[str | None, typer.Option("--text-column", help="column with the text to embed (with "
                                                    "--image-column: stored as the item's text)")] = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="column with unique ids "
                                                  "(default: row numbers)")] = None,
    image_column: Annotated[str | None, typer.Option("--image-column", help="column with image paths (relative to "
                                                     "FILE's folder) to embed; needs --model clip:...")] = None,
    model: Annotated[str, typer.Option("--model", help="default, a local folder, a hub id, or clip:ARCH/TAG | "
                                       "clip:/open_clip/folder")] = "default",
    index_kind: Annotated[str, typer.Option("--index-kind", help="auto, flat, hnsw, ivf, ivfpq (IVF-PQ + exact "
                                            "re-ranking) or a faiss factory string")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps")] = "auto",
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="fail instead of using the bundled model "
                                              "when --model cannot load")] = False,
    backend: BackendOption = None,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data actors: a local "
                                        "runtime, or the cluster --ray-address names; needs embtune[ray])")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster HOST:PORT for --engine ray "
                                                    "(default: RAY_ADDRESS, else a local runtime)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="embedding actors for --engine ray (default: one "
                                                "per CPU of the runtime)")] = None,
) -> None:
    """Embed a table's text (or image) column and store it as a searchable collection."""
    from core.collection.named import index_file

    context: Context = ctx.obj
    report = index_file(
        file, collection=collection, text_column=text_column, id_column=id_column, image_column=image_column,
        model=_with_backend(model, backend),
        index_kind=index_kind, device=device, fallback=not no_fallback,
        workspace=context.workspace(), db=context.database(), show_progress=sys.stderr.isatty() or None,
        engine=engine, ray_address=ray_address, workers=workers,
    )
    typer.echo(f"indexed {report.count} items into {report.collection!r} with {report.model_id} "
               f"({report.dimension}-d, {report.index_factory}) in {report.seconds:.1f} s")


@app.command("search")
def search_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="collection name")],
    query: Annotated[str | None, typer.Argument(help="text to search for")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="number of results")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of {id, score, metadata}")] = False,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="metadata field=value (repeatable)")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="search with this image instead of a text "
                                               "(collections built with a clip: model)")] = None,
) -> None:
    """Search a collection by text, or by image with --image."""
    from core.collection.named import parse_filter, search_collection

    context: Context = ctx.obj
    hits = search_collection(name, query, k=k, filter=parse_filter(filters), image=image,
                             workspace=context.workspace(), db=context.database())
    if as_json:
        typer.echo(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False, indent=2))
        return
    if not hits:
        typer.echo("no results")
    for rank, hit in enumerate(hits, start=1):
        extra = ", ".join(f"{key}={value}" for key, value in list(hit.metadata.items())[:3])
        typer.echo(f"{rank:>2}. {hit.score:.4f}  {hit.id}  {hit.text or ''}" + (f"  [{extra}]" if extra else ""))


@app.command("embed")
def embed_command(
    text: Annotated[str, typer.Argument(help="text to embed")],
    model: Annotated[str, typer.Option("--model", help="default, minilm, a local folder or a hub id")] = "default",
    device: Annotated[str, typer.Option("--device")] = "auto",
    truncate_dim: Annotated[int | None, typer.Option("--truncate-dim", help="Matryoshka dimension")] = None,
    no_fallback: Annotated[bool, typer.Option("--no-fallback")] = False,
    repeat: Annotated[int, typer.Option("--repeat", help="embed N times to see the cache at work")] = 1,
    backend: BackendOption = None,
    side: Annotated[str, typer.Option("--side", help="query or document: which of the model's prompts to apply")]
    = "query",
) -> None:
    """Debug one embedding: model, dimension, norm, first values, time, cache hit."""
    import numpy as np

    from core.embedders import load_embedder

    if not text.strip():
        raise EmbtuneError("the text to embed is empty")
    embedder = load_embedder(_with_backend(model, backend), device=device, truncate_dim=truncate_dim,
                             fallback=not no_fallback)
    _ = embedder.fingerprint  # computed once up front so the timing below is the encode alone
    for attempt in range(max(1, repeat)):
        hits_before = embedder.cache.stats().hits if embedder.cache is not None else 0
        started = time.perf_counter()
        vector = embedder.encode(text, side=side)
        elapsed_ms = (time.perf_counter() - started) * 1000
        hit = embedder.cache is not None and embedder.cache.stats().hits > hits_before
        if attempt == 0:
            typer.echo(f"model:      {embedder.model_id}" + (" (fallback)" if embedder.fell_back else ""))
            typer.echo(f"device:     {embedder.device}" + (f" ({embedder.backend} backend)"
                                                              if getattr(embedder, "backend", "torch") != "torch"
                                                              else ""))
            typer.echo(f"dimension:  {embedder.dimension}")
            prompt = embedder.prompt_for(side)
            typer.echo(f"side:       {side}" + (f" (prompt {prompt!r})" if prompt else " (the model has no prompts)"))
            typer.echo(f"norm:       {float(np.linalg.norm(vector)):.6f}")
            typer.echo(f"first:      {np.array2string(vector[:8], precision=4, separator=', ')}")
        typer.echo(f"time:       {elapsed_ms:.3f} ms  cache hit: {'yes' if hit else 'no'}")


@app.command("collections")
def collections_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List collections with size, model, dimension and index kind."""
    from core.collection.named import describe_collections

    rows = describe_collections(ctx.obj.database())
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not rows:
        typer.echo("no collections yet: embtune index FILE --collection NAME --text-column COL")
        return
    header = f"{'name':<24} {'size':>8} {'dim':>5} {'index':<10} model"
    typer.echo(header)
    for row in rows:
        model = row["model"] + (f" ({row['model_id']})" if row["model_id"] and row["model_id"] != row["model"] else "")
        typer.echo(f"{row['name']:<24} {row['size']:>8} {row['dimension']:>5} {row['index_kind']:<10} {model}")


@app.command("check-setup")
def check_setup_command(
    ctx: typer.Context,
    skip_model: Annotated[bool, typer.Option("--skip-model", help="do not load the bundled model")] = False,
) -> None:
    """Check Python, torch, GPU, dependencies, bundled model, workspace and database."""
    from core.setup_check import FAIL, run_checks
    from storage.workspace import Workspace, default_workspace_root

    context: Context = ctx.obj
    root = Path(context.workspace_dir).expanduser() if context.workspace_dir else default_workspace_root()
    checks = run_checks(root, Workspace(root.resolve()).db_url(context.db_url), load_model=not skip_model)
    for check in checks:
        typer.echo(check.line())
    if any(check.status == FAIL for check in checks):
        raise typer.Exit(1)


def _split_ints(value: str | None, option: str) -> list[int]:
    return split_ints(value, option) if value else []


app.command("train")(train_command)
app.add_typer(runs_app, name="runs")


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", help="pairs file (query, item/item_id, score) or a folder with "
                                       "corpus/queries/qrels CSVs")],
    models: Annotated[list[str], typer.Option("--model", help="model spec or run:NAME (repeat to compare)")],
    dims: Annotated[str | None, typer.Option("--dims", help="Matryoshka dimensions, e.g. 384,256,128,64")] = None,
    corpus: Annotated[str | None, typer.Option("--corpus", help="collection or id,text file: the items searched "
                                               "(item_id refers to them; item texts are added)")] = None,
    corpus_text_column: Annotated[str, typer.Option("--corpus-text-column")] = "text",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the full report (per-query values "
                                                  "included) here; Markdown beside it")] = None,
    regressions_limit: Annotated[int, typer.Option("--regressions", help="list the N queries the last model "
                                                   "lost most on")] = 0,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Retrieval metrics per dimension for each model; paired intervals between them."""
    from core.data.training_data import corpus_items
    from core.evaluation import run_evaluation
    from storage.workspace import atomic_write_json, atomic_write_text

    db = ctx.obj.database()
    items = corpus_items(corpus, corpus_text_column, db=db) if corpus else None
    report = run_evaluation(data, models, dimensions=_split_ints(dims, "--dims") or None, corpus=items, db=db,
                            device=device, regressions_limit=regressions_limit)
    typer.echo(f"evaluated {report.queries} queries against {report.corpus_items} corpus items"
               + (f" ({report.corpus_note})" if report.corpus_note else ""), err=True)
    typer.echo(report.markdown())
    for regression in report.regressions:
        moves = ", ".join(f"{item}: {a or '-'}→{b or '-'}" for item, (a, b) in regression.relevant_moves.items())
        typer.echo(f"regression {regression.query_id} {regression.query!r}: {regression.value_a:.3f} → "
                   f"{regression.value_b:.3f}; relevant ranks {moves}")
        typer.echo(f"    A top-5: {[i for i, _ in regression.top_a]}")
        typer.echo(f"    B top-5: {[i for i, _ in regression.top_b]}")
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
    context: Context = ctx.obj
    db = context.database()
    report = export_model(model_or_run, format=export_format, quantize=quantize, calibration=calibration, data=data,
                          corpus=corpus_items(corpus, db=db) if corpus else None,
                          dimensions=_split_ints(dims, "--dims") or None, collection=collection, overwrite=overwrite,
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


negatives_app = typer.Typer(help="Review mined hard negatives.", no_args_is_help=True)
adapters_app = typer.Typer(help="LoRA adapters: list and merge.", no_args_is_help=True)
app.add_typer(negatives_app, name="negatives")
app.add_typer(adapters_app, name="adapters")
app.add_typer(models_app, name="models")


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


llm_app = typer.Typer(help="A/B benchmark a causal LM against the same LM with LoRA adapters.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")


@llm_app.command("bench")
def llm_bench_command(config_file: Annotated[Path, typer.Argument(help="BenchConfig JSON")]) -> None:
    """Answer the suite with the base and each adapter; write JSON, text report and 300-dpi figure."""
    from core.llmbench.config import BenchConfig
    from core.llmbench.report import figure, text_report
    from core.llmbench.run import run_bench
    from storage.workspace import atomic_write_json, atomic_write_text

    config = BenchConfig.from_file(config_file)
    # The bench's own lines (load time, GPU memory per device) follow the config's verbosity.
    logging.getLogger("core.llmbench").setLevel(config.logging.verbosity.upper())

    def show(step: dict[str, Any]) -> None:
        times = ", ".join(f"{k} {v:.1f}s" for k, v in step["seconds"].items())
        typer.echo(f"[{step['done']}/{step['total']}] {step['prompt']!r} ({times})", err=True)

    results = run_bench(config, progress=show)
    out = Path(config.output.dir)
    atomic_write_json(out / config.output.json_name, results)
    report = text_report(results)
    atomic_write_text(out / "report.txt", report)
    figure(results, out / "report.png")
    typer.echo(report)
    typer.echo(f"written: {out / config.output.json_name}, {out / 'report.txt'}, {out / 'report.png'}")


@llm_app.command("analyze")
def llm_analyze_command(
    results_file: Annotated[Path, typer.Argument(help="results JSON from `embtune llm bench`")],
    figure_path: Annotated[Path | None, typer.Option("--figure", help="PNG path (default: beside the JSON)")] = None,
) -> None:
    """Text report (global, per category, top gains/regressions, recommendation) and a 2×2 300-dpi PNG."""
    from core.llmbench.report import figure, load_results, text_report

    results = load_results(results_file)
    typer.echo(text_report(results))
    typer.echo(f"figure: {figure(results, figure_path or results_file.with_suffix('.png'))}")


@llm_app.command("train-lora")
def llm_train_lora_command(
    out: Annotated[Path, typer.Option("--out", help="folder for the adapter")],
    base: Annotated[str, typer.Option("--base", help="causal LM id/folder, or smollm2")] = "smollm2",
    data: Annotated[str, typer.Option("--data", help="prompt/response JSONL (default: the bundled French "
                                      "set)")] = "default",
    epochs: Annotated[float, typer.Option("--epochs")] = 3.0,
    learning_rate: Annotated[float, typer.Option("--lr")] = 2e-4,
    rank: Annotated[int, typer.Option("--r")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """A small supervised LoRA fine-tune, to produce an adapter to compare."""
    from core.llmbench.suite import DEFAULT_TRAIN
    from core.llmbench.train_lora import train_lora

    result = train_lora(base, out, data=DEFAULT_TRAIN if data == "default" else data, epochs=epochs,
                        learning_rate=learning_rate, r=rank, alpha=2 * rank, overwrite=overwrite)
    typer.echo(f"adapter: {result.output_dir} ({result.examples} examples, {result.steps} steps, "
               f"{result.train_seconds:.0f} s, final loss {result.final_loss}, "
               f"{result.trainable_parameters} trainable parameters)")


@llm_app.command("check-setup")
def llm_check_setup_command(
    config_file: Annotated[Path | None, typer.Option("--config", help="BenchConfig JSON to check")] = None,
) -> None:
    """Python, torch, CUDA and GPU memory, the LLM libraries, 4-bit, SmolLM2, config, suite and adapters."""
    from core.llmbench.setup_check import run_llm_checks
    from core.setup_check import FAIL

    checks = run_llm_checks(config_file)
    for check in checks:
        typer.echo(check.line())
    if any(check.status == FAIL for check in checks):
        raise typer.Exit(1)


@llm_app.command("quick-test")
def llm_quick_test_command(
    model: Annotated[str, typer.Option("--model")] = "smollm2",
    prompt: Annotated[str, typer.Option("--prompt")] = "ouvre chrome",
) -> None:
    """Load the model and answer one prompt, with timing."""
    from core.llmbench.config import BenchConfig
    from core.llmbench.run import generate, load_model
    from core.llmbench.suite import Prompt, load_suite

    started = time.perf_counter()
    config = BenchConfig.from_dict({"model": {"base": model}, "generation": {"do_sample": False}})
    loaded = load_model(config)
    typer.echo(f"loaded {model} on {loaded.device} in {time.perf_counter() - started:.1f} s")
    answer = generate(loaded, load_suite("default"), Prompt("quick", "quick", prompt, [prompt]), config)
    typer.echo(f"{prompt!r} → {answer.text!r}\n{answer.new_tokens} tokens in {answer.seconds:.2f} s "
               f"({answer.tokens_per_s:.1f} tokens/s)")


@app.command("match")
def match_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="image collection with a workflow_id (or --field) column")],
    screenshot: Annotated[Path, typer.Argument(help="screenshot to match")],
    k: Annotated[int, typer.Option("-k", "--k", help="number of workflows")] = 3,
    threshold: Annotated[float | None, typer.Option("--threshold", help="cosine the best match must reach to be "
                                                    "confident (default: calibrated per model kind, see "
                                                    "core.matching.default_threshold)")]
    = None,
    field: Annotated[str, typer.Option("--field", help="metadata field that names the workflow")] = "workflow_id",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Which workflows is a screenshot from? Best score per workflow, and whether the best is confident."""
    from core.collection.named import open_collection
    from core.matching import match

    context: Context = ctx.obj
    collection = open_collection(name, workspace=context.workspace(), db=context.database())
    # No --threshold: the one calibrated for the collection's kind of model (core.matching.default_threshold).
    result = match(collection, screenshot, k, field=field, threshold=threshold)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    for rank, found in enumerate(result.matches, start=1):
        typer.echo(f"{rank:>2}. {found.score:.4f}  {field}={found.workflow_id}  (screenshot {found.item_id}, "
                   f"{found.hits} near)")
    typer.echo(f"{'confident' if result.confident else 'not confident'} (threshold {result.threshold:.2f})")
    for note in result.notes:
        typer.echo(f"note: {note}")


@app.command("map")
def map_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="collection name")],
    out: Annotated[Path, typer.Option("--out", help="map file: .png (static) or .html (interactive)")],
    method: Annotated[str, typer.Option("--method", help="umap or tsne")] = "umap",
    color_by: Annotated[str | None, typer.Option("--color-by", help="metadata field to colour by")] = None,
    max_points: Annotated[int | None, typer.Option("--max-points", help="sample above this many points "
                                                   "(default: core.maps.MAX_MAP_POINTS)")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """2-D map of a collection's vectors (UMAP or t-SNE), cached per collection version."""
    from core.maps import MAX_MAP_POINTS, map_collection

    context: Context = ctx.obj
    report = map_collection(name, out=out, method=method, color_by=color_by, seed=seed,
                            max_points=max_points or MAX_MAP_POINTS, workspace=context.workspace(),
                            db=context.database())
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"map of {report.points} points ({report.method}{', cached projection' if report.from_cache else ''}"
               f", {report.seconds:.1f} s): {report.out}")


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

    result = compare_embedders(data, models, label_column=label_column, text_column=text_column,
                               image_column=image_column, device=device)
    typer.echo(f"{result.items} {result.modality} items, {result.labels} labels "
               f"({result.evaluated_items} items with a same-label neighbour)\n")
    typer.echo(result.table())
    typer.echo("\nverdict: " + result.verdict())
    if json_out is not None:
        atomic_write_json(json_out, result.to_dict())
        typer.echo(f"written: {json_out}")


@app.command("confirm")
def confirm_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="collection (image or text) with a workflow_id (or --field) column")],
    input: Annotated[str, typer.Argument(help="screenshot path (image collections) or text (text collections)")],
    workflow_id: Annotated[str, typer.Argument(help="the workflow this input really belongs to")],
    trigger_threshold: Annotated[int, typer.Option("--trigger-threshold", help="train after this many new "
                                                   "confirmations")] = 10,
    max_examples: Annotated[int, typer.Option("--max-examples", help="keep at most this many examples")] = 1000,
    epochs: Annotated[int, typer.Option("--epochs")] = 3,
    learning_rate: Annotated[float, typer.Option("--learning-rate")] = 1e-5,
    field: Annotated[str, typer.Option("--field", help="metadata field that names the workflow")] = "workflow_id",
    device: Annotated[str, typer.Option("--device")] = "auto",
    train: Annotated[bool, typer.Option("--train/--no-train", help="run the fine-tune here when the threshold is "
                                        "reached (this process waits for it)")] = True,
) -> None:
    """Record a confirmed (input, workflow) example for the collection's background fine-tuner."""
    from core.online import FineTunerConfig, LightweightFineTuner

    context: Context = ctx.obj
    config = FineTunerConfig(trigger_threshold=trigger_threshold if train else 2**31 - 1, max_examples=max_examples,
                             epochs=epochs, learning_rate=learning_rate, field=field, device=device)
    tuner = LightweightFineTuner(name, workspace=context.workspace(), db=context.database(), config=config)
    image = Path(input) if tuner.modality == "image" else input
    started = tuner.confirm(image, workflow_id)
    if started:
        typer.echo(f"confirmed; {trigger_threshold} new examples reached: fine-tuning {name} (waiting for it)")
        tuner.wait()
    else:
        stats = tuner.stats()
        typer.echo(f"confirmed; {stats.pending} pending of {trigger_threshold} before the next fine-tune")
    if started:
        for line in tuner.stats().lines():
            typer.echo(line)


debug_app = typer.Typer(help="Look inside embtune's background machinery.", no_args_is_help=True)
app.add_typer(debug_app, name="debug")


@debug_app.command("finetuning")
def debug_finetuning_command(
    ctx: typer.Context,
    collection: Annotated[str | None, typer.Option("--collection", help="one collection (default: every one with "
                                                   "a fine-tuner)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Background fine-tuner stats: trainings, examples, pending, losses, held-out top-1, checkpoint, errors."""
    from core.collection.named import collection_record
    from core.online import all_finetuning_stats, finetuning_stats

    db = ctx.obj.database()
    if collection is not None:
        collection_record(collection, db)  # an unknown name lists the known ones
        stats = [finetuning_stats(db, collection)]
    else:
        stats = all_finetuning_stats(db)
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in stats], ensure_ascii=False, indent=2))
        return
    if not stats:
        typer.echo("no fine-tuner has run yet (confirm examples with `embtune confirm`)")
    for entry in stats:
        for line in entry.lines():
            typer.echo(line)



demo_app = typer.Typer(help="Gradio demos: product search A vs B, screenshot search that learns.",
                       no_args_is_help=True)
app.add_typer(demo_app, name="demo")

_HOST_HELP = "address to bind (default 127.0.0.1: this machine only)"
_SHARE_HELP = "also ask gradio for a public *.gradio.live link (needs internet)"
# Both demos take the same serving options.
DemoHost = Annotated[str, typer.Option("--host", help=_HOST_HELP)]
DemoPort = Annotated[int | None, typer.Option("--port", help="port (default: gradio's, 7860 or the next free)")]
DemoShare = Annotated[bool, typer.Option("--share", help=_SHARE_HELP)]


def require_free_port(host: str, port: int | None) -> None:
    """A busy or forbidden port is one clear line before any indexing, model loading or URL printing."""
    import errno
    import socket

    if port is None:
        return
    if not 0 < port < 65536:
        raise EmbtuneError(f"--port {port} is not a port number (1–65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EmbtuneError(f"--host {host!r} cannot be resolved: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EmbtuneError(f"port {port} on {host} is already in use: stop what listens there or choose "
                                   "another with --port") from None
            raise EmbtuneError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@demo_app.command("product")
def demo_product_command(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option("--collection", help="text collection (default: the bundled "
                                            "catalogue, indexed on first start)")] = "catalogue",
    model_a: Annotated[str | None, typer.Option("--model-a", help="model spec (default: the collection's "
                                                "model)")] = None,
    model_b: Annotated[str | None, typer.Option("--model-b", help="model spec or run:NAME (default: the newest "
                                                "finished run for the collection)")] = None,
    host: DemoHost = "127.0.0.1",
    port: DemoPort = None,
    share: DemoShare = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Product search, model A vs model B side by side (demos/product_search.py)."""
    require_free_port(host, port)
    from demos.product_search import launch

    context: Context = ctx.obj
    launch(collection=collection, model_a=model_a, model_b=model_b, host=host, port=port, share=share,
           workspace=context.workspace(), db=context.database(), device=device)


@demo_app.command("screens")
def demo_screens_command(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option("--collection", help="image collection with workflow ids (default: "
                                            "the bundled screenshot set, indexed on first start)")] = "screens",
    model: Annotated[str | None, typer.Option("--model", help="model to index the bundled set with when the "
                                              "collection is missing (default screen:default; clip:... works)")]
    = None,
    host: DemoHost = "127.0.0.1",
    port: DemoPort = None,
    share: DemoShare = False,
    device: Annotated[str, typer.Option("--device")] = "auto",
) -> None:
    """Screenshot search with Right/Wrong buttons feeding the background fine-tuner (demos/image_search.py)."""
    require_free_port(host, port)
    from demos.image_search import launch

    context: Context = ctx.obj
    launch(collection=collection, model=model, host=host, port=port, share=share, workspace=context.workspace(),
           db=context.database(), device=device)

@app.command("studio")
def studio_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="address to bind (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8501,
    workspace: Annotated[str | None, typer.Option("--workspace", help="workspace folder (overrides the global "
                                                  "--workspace)")] = None,
    bundled_catalogue: Annotated[bool, typer.Option("--bundled-catalogue", help="on first start, index the bundled "
                                                    "catalogue, queue its queries and project its map")] = False,
) -> None:
    """Run the Streamlit studio: data, labelling, training, comparisons, maps."""
    import subprocess

    import webapp

    require_free_port(host, port)
    context: Context = ctx.obj
    if workspace is not None:
        context = Context(workspace, context.db_url)
    folder = context.workspace()
    database = context.database()
    if bundled_catalogue:
        from core.data.bundled import ensure_bundled_catalogue

        ensure_bundled_catalogue(folder, database, say=typer.echo, show_progress=sys.stderr.isatty())
    app_file = Path(webapp.__file__).resolve().parent / "app.py"
    env = {**os.environ, "EMBTUNE_HOME": str(folder.root), "EMBTUNE_DB": database.url}
    typer.echo(f"embtune studio on http://{host}:{port} (workspace {folder.root}); Ctrl+C stops it")
    command = [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.headless", "true",
               "--server.address", host, "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer"]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # Become the server: a signal sent to `embtune studio` (Ctrl+C, a test's teardown, a supervisor's
        # SIGTERM) reaches streamlit itself and no orphaned server is left behind.
        os.execve(sys.executable, command, env)
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one ``error:`` line and exit code 1."""
    try:
        app(args=argv, standalone_mode=True)
    except EmbtuneError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
