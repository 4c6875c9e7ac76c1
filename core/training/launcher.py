"""Training launched from a UI: one operating-system process per run, tracked in storage.

A fine-tune takes minutes to hours; it must not live inside a Streamlit script run (a rerun,
a reload or a studio restart would kill or orphan it). ``launch_training`` checks the data
and loss first (a user mistake is refused before anything starts), records the run as
``queued`` with its config, and starts ``python -m core.training.worker`` detached from the
caller. Everything after that goes through the database: the worker writes progress and a
heartbeat, the page reads them; ``cancel_training`` sets a flag the worker polls;
``core.training.runs.refresh_runs`` ends a run whose process is gone (``interrupted at step N``).

The studio keeps a *standby* worker ready (``prepare_worker``): a process that has already imported
torch and sentence-transformers and waits for a run's name, so the first step of a launched run
comes seconds sooner. ``EMBTUNE_STANDBY_WORKER=0`` turns it off (it holds ~0.5 GB while it waits).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError
from core.training.config import TrainingConfig
from core.training.runs import ACTIVE_STATES, CANCELLING, process_start_time, resolve_model_spec, state_label


def new_run_name() -> str:
    """A run name no earlier run has (time-stamped, with a short random tail for two launches a second)."""
    import secrets

    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


DEFAULT_VALIDATION = TrainingConfig.model_fields["validation_fraction"].default
DEFAULT_TEST = TrainingConfig.model_fields["test_fraction"].default


def inspect_training_data(source: str, *, db: Any, corpus: str | None = None, corpus_text_column: str = "text",
                          data_format: str = "auto", group_by: str = "auto", validation: float = DEFAULT_VALIDATION,
                          test: float = DEFAULT_TEST) -> dict[str, Any]:
    """What a training source holds, before a run is configured: format, usable rows, the losses
    that fit it, the format's recipe (the defaults a UI shows), validation warnings, and whether its
    groups fill every split at these fractions (``split_problem`` says why not, with how many are needed).
    Raises for unusable data."""
    from core.data.split import group_counts, groups_needed
    from core.data.training_data import group_column_for, load_training_data
    from core.training.losses import LOSSES_BY_FORMAT
    from core.training.recipes import recipe_for

    data = load_training_data(source, data_format=data_format, corpus=corpus, corpus_text_column=corpus_text_column,
                              db=db)
    recipe = recipe_for(data.data_format)
    losses = [recipe.loss, *[loss for loss in LOSSES_BY_FORMAT[data.data_format] if loss != recipe.loss]]
    group = group_column_for(data.frame, group_by)
    groups = int(data.frame[group].astype(str).nunique()) if group in data.frame.columns else 0
    counts = group_counts(groups, validation=validation, test=test)
    needed = groups_needed(validation=validation, test=test)
    empty = counts.empty_splits(validation, test)
    unit = ("query" if groups == 1 else "queries") if group in ("anchor", "query_id") else \
        f"group{'' if groups == 1 else 's'} of '{group}'"
    problem = None
    if empty:
        problem = (f"only {groups} {unit}: the {empty[0]} split would be empty at validation {validation:g} / test "
                   f"{test:g} — {needed} are needed ({needed - groups} more), or change the fractions")
    return {"data_format": data.data_format, "rows": data.report.rows, "losses": losses,
            "recipe": recipe.to_dict(), "counts": dict(data.report.counts), "warnings": list(data.report.warnings),
            "group_by": group, "group_unit": unit, "groups": groups, "groups_needed": needed,
            "split_groups": {"train": counts.train, "validation": counts.validation, "test": counts.test},
            "split_problem": problem}


def labels_shortfall(collection: str, db: Any, *, validation: float = DEFAULT_VALIDATION,
                     test: float = DEFAULT_TEST) -> str | None:
    """What the labels of ``collection`` still lack to train, in numbers (pairs and queries to add), or None when
    there are enough of both; a UI says this before anyone tries to launch."""
    from core.data.split import groups_needed
    from core.data.validate import MIN_TRAINING_ROWS

    labels = db.labels(collection)
    pairs = len({(label.query, label.item_key) for label in labels})
    queries = len({label.query for label in labels})
    needed = groups_needed(validation=validation, test=test)
    lacking = [f"{MIN_TRAINING_ROWS - pairs} more pairs" if pairs < MIN_TRAINING_ROWS else "",
               f"{needed - queries} more queries" if queries < needed else ""]
    lacking = [part for part in lacking if part]
    if not lacking:
        return None
    return (f"{pairs} labelled pair{'' if pairs == 1 else 's'} on {queries} quer{'y' if queries == 1 else 'ies'}; "
            f"training needs at least {MIN_TRAINING_ROWS} pairs on {needed} queries (validation {validation:g} / "
            f"test {test:g}): label {' and '.join(lacking)}, or change the fractions")


def check_launch(config: TrainingConfig, db: Any) -> dict[str, Any]:
    """Refuse a run that cannot train before a process is started: too few pairs or queries for the
    split, a loss that does not fit the data, a base-model folder that does not exist."""
    from core.errors import DataError
    from core.training.losses import choose_loss

    found = inspect_training_data(config.data, db=db, corpus=config.corpus,
                                  corpus_text_column=config.corpus_text_column, data_format=config.data_format,
                                  group_by=config.group_by, validation=config.validation_fraction,
                                  test=config.test_fraction)
    if found["split_problem"]:
        raise DataError(f"{config.data}: {found['split_problem']}")
    found["loss"] = choose_loss(config.loss, found["data_format"])
    resolve_model_spec(config.model, db, collection=config.collection)  # an unknown run:NAME is refused now
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
    standby = _take_standby(db, workspace, python, env)
    try:
        if standby is not None:
            # The next standby is prepared on the page's next run, not now: its imports would take the CPU this
            # run needs for its first steps.
            pid = standby.hand_over(name, log_path)
        else:
            pid = _start_worker(["--run", name], db.url, workspace, python, env, log_path, subprocess.DEVNULL).pid
    except OSError as exc:
        runs.delete(name)
        raise EmbtuneError(f"could not start the training process: {exc}") from exc
    runs.set_process(name, pid=pid, host=socket.gethostname(), process_started=process_start_time(pid),
                     log_path=str(log_path))
    return name


class StandbyWorker:
    """A worker started before the click: it has imported torch, sentence-transformers and the trainer and
    waits for a run name on its stdin, so a launched run starts at its data and model, not at its imports
    (the studio keeps one per server; a standby whose studio has gone reads end-of-file and exits)."""

    def __init__(self, db_url: str, workspace: Any, python: str | None, env: dict[str, str] | None) -> None:
        import secrets

        self.log_path = workspace.runs_dir / f".standby-{secrets.token_hex(4)}.log"
        self.process = _start_worker(["--standby"], db_url, workspace, python, env, self.log_path, subprocess.PIPE)

    def alive(self) -> bool:
        return self.process.poll() is None

    def hand_over(self, run_name: str, log_path: Path) -> int:
        """Make this standby the run's process; returns its pid."""
        os.replace(self.log_path, log_path)  # the process keeps writing to the same file, now the run's log
        self.process.stdin.write(f"{run_name}\n".encode())
        self.process.stdin.close()
        return self.process.pid


ENV_STANDBY = "EMBTUNE_STANDBY_WORKER"
_standbys: dict[tuple[str, str, str], StandbyWorker] = {}
_standby_lock = threading.Lock()


def standby_enabled() -> bool:
    return os.environ.get(ENV_STANDBY, "1").strip().lower() not in ("0", "false", "no", "off")


def prepare_worker(*, db: Any, workspace: Any, python: str | None = None, env: dict[str, str] | None = None) -> None:
    """Keep one standby worker ready for ``launch_training`` in this process (the studio calls this when the
    Train page opens); cheap when one is ready."""
    key = _standby_key(db, workspace, python)
    with _standby_lock:
        current = _standbys.get(key)
        if current is None or not current.alive():
            _standbys[key] = StandbyWorker(db.url, workspace, python, env)


def _take_standby(db: Any, workspace: Any, python: str | None, env: dict[str, str] | None) -> StandbyWorker | None:
    with _standby_lock:
        standby = _standbys.pop(_standby_key(db, workspace, python), None)
    return standby if standby is not None and standby.alive() else None


def _standby_key(db: Any, workspace: Any, python: str | None) -> tuple[str, str, str]:
    return db.url, str(workspace.root), python or sys.executable


def _start_worker(args: list[str], db_url: str, workspace: Any, python: str | None, env: dict[str, str] | None,
                  log_path: Path, stdin: int) -> subprocess.Popen:
    """``python -m core.training.worker`` in a session of its own (a studio restart does not end it), its
    output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [python or sys.executable, "-m", "core.training.worker", "--db", db_url, *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=stdin, start_new_session=True, cwd=str(Path.cwd()),
            env={**os.environ, **(env or {}), "EMBTUNE_HOME": str(workspace.root)})


def cancel_training(name: str, db: Any) -> None:
    """Ask a queued or running run to stop; the worker stops at the next step and saves a checkpoint."""
    from storage.runs import RunStore

    runs = RunStore(db)
    run = runs.get(name)
    if run is None:
        raise EmbtuneError(f"training run {name!r} does not exist")
    if run.status == CANCELLING:
        return
    if run.status not in ACTIVE_STATES or not runs.request_cancel(name):  # it may have ended a moment ago
        raise EmbtuneError(f"training run {name!r} is {state_label(runs.get(name) or run)}; only queued or running "
                           "runs can be cancelled")
