"""Training launched from a UI: one operating-system process per run, tracked in storage.

A fine-tune takes minutes to hours; it must not live inside a Streamlit script run (a rerun,
a reload or a studio restart would kill or orphan it). ``launch_training`` checks the data
and loss first (a user mistake is refused before anything starts), records the run as
``queued`` with its config, and starts ``python -m core.training.worker`` detached from the
caller. Everything after that goes through the database: the worker writes progress and a
heartbeat, the page reads them; ``cancel_training`` sets a flag the worker polls;
``core.training.runs.refresh_runs`` ends a run whose process is gone (``interrupted at step N``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError
from core.training.config import TrainingConfig
from core.training.runs import ACTIVE_STATES, process_start_time, state_label


def new_run_name() -> str:
    """A run name no earlier run has (time-stamped, with a short random tail for two launches a second)."""
    import secrets

    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def inspect_training_data(source: str, *, db: Any, corpus: str | None = None, corpus_text_column: str = "text",
                          data_format: str = "auto") -> dict[str, Any]:
    """What a training source holds, before a run is configured: format, usable rows, the losses
    that fit it, the format's recipe (the defaults a UI shows), validation warnings. Raises for
    unusable data."""
    from core.data.training_data import load_training_data
    from core.training.losses import LOSSES_BY_FORMAT
    from core.training.recipes import recipe_for

    data = load_training_data(source, data_format=data_format, corpus=corpus, corpus_text_column=corpus_text_column,
                              db=db)
    recipe = recipe_for(data.data_format)
    losses = [recipe.loss, *[loss for loss in LOSSES_BY_FORMAT[data.data_format] if loss != recipe.loss]]
    return {"data_format": data.data_format, "rows": data.report.rows, "losses": losses,
            "recipe": recipe.to_dict(), "counts": dict(data.report.counts), "warnings": list(data.report.warnings)}


def check_launch(config: TrainingConfig, db: Any) -> dict[str, Any]:
    """Refuse a run that cannot train before a process is started: too few pairs, a loss that does
    not fit the data, a base-model folder that does not exist."""
    from core.training.losses import choose_loss

    found = inspect_training_data(config.data, db=db, corpus=config.corpus,
                                  corpus_text_column=config.corpus_text_column, data_format=config.data_format)
    found["loss"] = choose_loss(config.loss, found["data_format"])
    model = Path(config.model).expanduser()
    if config.model != "default" and (config.model.startswith((".", "/", "~")) or model.is_absolute()) \
            and not model.exists():
        raise EmbtuneError(f"base model folder {config.model} does not exist")
    return found


def launch_training(config: TrainingConfig, *, db: Any, workspace: Any, python: str | None = None,
                    env: dict[str, str] | None = None) -> str:
    """Validate, queue and start a run in its own process; returns the run name."""
    name = config.run_name or new_run_name()
    output_dir = config.output_dir or str(workspace.models_dir / name)
    config = config.replace(run_name=name, output_dir=output_dir)
    if Path(output_dir).exists() and not config.overwrite and not config.resume:
        raise EmbtuneError(f"output folder {output_dir} already exists: choose another run name")
    check_launch(config, db)
    from storage.runs import RunStore

    runs = RunStore(db)
    runs.queue(name, collection_name=config.collection, config=config.to_dict())
    log_path = workspace.runs_dir / f"{name}.log"
    try:
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [python or sys.executable, "-m", "core.training.worker", "--db", db.url, "--run", name],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=str(Path.cwd()), env={**os.environ, **(env or {}), "EMBTUNE_HOME": str(workspace.root)},
            )
    except OSError as exc:
        runs.delete(name)
        raise EmbtuneError(f"could not start the training process: {exc}") from exc
    runs.set_process(name, pid=process.pid, host=socket.gethostname(), process_started=process_start_time(process.pid),
                     log_path=str(log_path))
    return name


def cancel_training(name: str, db: Any) -> None:
    """Ask a queued or running run to stop; the worker stops at the next step and saves a checkpoint."""
    from storage.runs import RunStore

    runs = RunStore(db)
    run = runs.get(name)
    if run is None:
        raise EmbtuneError(f"training run {name!r} does not exist")
    if run.status not in ACTIVE_STATES:
        raise EmbtuneError(f"training run {name!r} is {state_label(run)}; only queued or running runs can be "
                           "cancelled")
    runs.request_cancel(name)
