"""The ``embtune`` command: a thin layer over ``core`` and ``storage``.

Each command parses its options, calls one core function and prints the result. A user
mistake (``EmbtuneError``) is printed as one ``error:`` line with exit code 1, and what core
warns about (``EmbtuneWarning``) as one ``warning:`` line; anything else is a bug and keeps
its traceback. Heavy imports (torch, faiss) happen inside the commands so ``embtune --help``
answers at once. One module per area (``collections``, ``train``,
``evaluation``, ``llm``, ``models``, ``apps``), each a Typer app merged here.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Annotated, Any

import typer

from core.errors import EmbtuneError, EmbtuneWarning
from embtune.cli import apps, collections, evaluation, llm
from embtune.cli.common import Context
from embtune.cli.models import models_app
from embtune.cli.train import runs_app, train_command

app = typer.Typer(
    name="embtune",
    help="Adapt embedding models to your domain and prove the gain with numbers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


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


app.add_typer(collections.app)
training = typer.Typer()
training.command("train")(train_command)
app.add_typer(training)
app.add_typer(runs_app, name="runs")
app.add_typer(evaluation.app)
app.add_typer(evaluation.negatives_app, name="negatives")
app.add_typer(evaluation.adapters_app, name="adapters")
app.add_typer(models_app, name="models")
app.add_typer(llm.app, name="llm")
app.add_typer(apps.app)
app.add_typer(apps.debug_app, name="debug")
app.add_typer(apps.demo_app, name="demo")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one ``error:`` line and exit code 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", EmbtuneWarning)
        warnings.showwarning = _show_warning
        try:
            app(args=argv, standalone_mode=True)
        except EmbtuneError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(1)


def _show_warning(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    if issubclass(category, EmbtuneWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        warnings._showwarnmsg_impl(warnings.WarningMessage(message, category, filename, lineno, file, line))


if __name__ == "__main__":
    main()
