"""Long-running front ends and the machinery behind them: the studio, the demos, check-setup, debug."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from embtune.cli.common import Context, require_free_port

app = typer.Typer()


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
        from webapp.first_start import prepare_bundled_catalogue

        prepare_bundled_catalogue(folder, database, say=typer.echo, show_progress=sys.stderr.isatty())
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
