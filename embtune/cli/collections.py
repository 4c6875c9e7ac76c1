"""Collections from the command line: index, search, embed, list, match, map, confirm."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from core.errors import EmbtuneError
from embtune.cli.common import BackendOption, Context, at_least, text_argument, writable_output

app = typer.Typer()


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
    model: Annotated[str, typer.Option("--model", help="default, a local folder, a hub id, run:NAME, or clip:ARCH/TAG "
                                       "| clip:/open_clip/folder")] = "default",
    index_kind: Annotated[str, typer.Option("--index-kind", help="auto, flat, hnsw, hnsw_sq (HNSW over fp16 "
                                            "codes + exact re-ranking), ivf, ivfpq (IVF-PQ + exact re-ranking) or a "
                                            "faiss factory string")] = "auto",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps")] = "auto",
    no_fallback: Annotated[bool, typer.Option("--no-fallback", help="fail instead of using the bundled model "
                                              "when --model cannot load")] = False,
    backend: BackendOption = None,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data actors: a local "
                                        "runtime, or the cluster --ray-address names; needs embtune[ray])")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster HOST:PORT for --engine ray "
                                                    "(default: RAY_ADDRESS, else a local runtime)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="embedding actors for --engine ray (default: one "
                                                "per CPU of the runtime)", callback=at_least(1))] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="when another process is writing the collection: "
                                       "wait for it (default), or stop with an error")] = True,
) -> None:
    """Embed a table's text (or image) column and store it as a searchable collection."""
    from core.collection.named import index_file

    context: Context = ctx.obj
    report = index_file(
        file, collection=collection, text_column=text_column, id_column=id_column, image_column=image_column,
        model=context.model(model, backend),
        index_kind=index_kind, device=device, fallback=not no_fallback,
        workspace=context.workspace(), db=context.database(), show_progress=sys.stderr.isatty() or None,
        engine=engine, ray_address=ray_address, workers=workers, wait=wait,
        notice=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"indexed {report.count} items into {report.collection!r} with {report.model_id} "
               f"({report.dimension}-d, {report.index_factory}) in {report.seconds:.1f} s")


@app.command("search")
def search_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="collection name")],
    query: Annotated[str | None, typer.Argument(help="text to search for")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="number of results")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of {id, score, text, metadata}")] = False,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="metadata field=value (repeatable)")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="search with this image instead of a text "
                                               "(collections built with a clip: model)")] = None,
) -> None:
    """Search a collection by text, or by image with --image."""
    from core.collection.named import parse_filter, search_collection

    context: Context = ctx.obj
    if query is not None:
        text_argument(query, "query")
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
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="text to embed")],
    model: Annotated[str, typer.Option("--model", help="default, minilm, a local folder, a hub id or run:NAME")] = \
        "default",
    device: Annotated[str, typer.Option("--device")] = "auto",
    truncate_dim: Annotated[int | None, typer.Option("--truncate-dim", help="Matryoshka dimension")] = None,
    no_fallback: Annotated[bool, typer.Option("--no-fallback")] = False,
    repeat: Annotated[int, typer.Option("--repeat", help="embed N times to see the cache at work",
                                        callback=at_least(1))] = 1,
    backend: BackendOption = None,
    side: Annotated[str, typer.Option("--side", help="query or document: which of the model's prompts to apply")]
    = "query",
) -> None:
    """Debug one embedding: model, dimension, norm, first values, time, cache hit."""
    import numpy as np

    from core.embedders import load_embedder

    if not text_argument(text, "text to embed").strip():
        raise EmbtuneError("the text to embed is empty")
    embedder = load_embedder(ctx.obj.model(model, backend), device=device, truncate_dim=truncate_dim,
                             fallback=not no_fallback)
    _ = embedder.fingerprint  # computed once up front so the timing below is the encode alone
    for attempt in range(repeat):
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


@app.command("delete")
def delete_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="collection name")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="when another process is writing the collection: "
                                       "wait for it (default), or stop with an error")] = True,
) -> None:
    """Remove a collection: its rows in the database, then its index folder."""
    from core.collection.named import delete_collection

    context: Context = ctx.obj
    delete_collection(name, workspace=context.workspace(), db=context.database(), wait=wait,
                      notice=lambda line: typer.echo(line, err=True))
    typer.echo(f"deleted collection {name!r}")


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
    writable_output(out, "--out")
    report = map_collection(name, out=out, method=method, color_by=color_by, seed=seed,
                            max_points=max_points or MAX_MAP_POINTS, workspace=context.workspace(),
                            db=context.database())
    for note in report.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"map of {report.points} points ({report.method}{', cached projection' if report.from_cache else ''}"
               f", {report.seconds:.1f} s): {report.out}")


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
    image = Path(input) if tuner.modality == "image" else text_argument(input, "text")
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
