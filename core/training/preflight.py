"""What a training run checks before its row is written: a mistake found here leaves no trace in the database.

The output folder (not a file, not someone else's, writable), the run's name (a taken one is refused unless the
row is this run's own or ``--overwrite`` replaces it), a ``run:NAME`` base model (resolved to that run's folder),
and the free space the model and its checkpoints will take. ``core.training.train`` calls these, in this order,
before ``RunStore.start``; everything found after that is recorded on the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import EmbtuneError
from core.training.config import TrainingConfig
from core.training.runs import ACTIVE_STATES, refresh_runs, resolve_model_spec, state_label
from storage.workspace import check_writable, require_free_space

RUN_FILE = "embtune_run.json"
# How a run takes its row: a new one, one that is already its own (queued by the launcher, or being resumed),
# or one that --overwrite replaces.
NEW, TAKEOVER, REPLACE = "new", "takeover", "replace"


def check_output_dir(output_dir: Path, config: TrainingConfig) -> None:
    """Refused before any work (CLI, studio and API alike): a file where the model folder goes, a file among
    its parents, a folder that is someone else's, a place this process cannot write."""
    if output_dir.exists() and not output_dir.is_dir():
        raise EmbtuneError(f"--output-dir {config.output_dir} is an existing file: give a folder for the trained model")
    blocking = next((parent for parent in output_dir.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise EmbtuneError(f"--output-dir {config.output_dir}: {blocking} is a file, not a folder")
    check_writable(output_dir, what="--output-dir", folder=True)
    if not output_dir.exists() or not any(output_dir.iterdir()):
        return
    if (output_dir / RUN_FILE).exists() or config.overwrite:
        return
    raise EmbtuneError(f"output folder {output_dir} exists and is not an embtune run: choose another or --overwrite")


def run_row_mode(runs: Any, name: str, config: TrainingConfig, output_dir: Path, *, queued: bool) -> str:
    """How run ``name`` takes its row (``NEW``, ``TAKEOVER``, ``REPLACE``); a name another run holds is refused.

    ``queued``: the launcher queued this row for this process. A resumed run keeps the row of the run that wrote
    the same folder. ``--overwrite`` replaces an ended run's row (its gate, metrics and duration with it), never
    one whose process still trains.
    """
    existing = runs.get(name)
    if existing is None:
        return NEW
    if queued and existing.status == "queued":
        return TAKEOVER
    if config.resume and existing.model_path and Path(existing.model_path) == output_dir:
        return TAKEOVER
    if existing.status in ACTIVE_STATES:  # a process that died leaves "running" until someone looks
        existing = next(run for run in refresh_runs(runs.db) if run.name == name)
    if config.overwrite and existing.status not in ACTIVE_STATES:
        return REPLACE
    how = "wait for it or cancel it" if existing.status in ACTIVE_STATES else "--overwrite replaces it"
    raise EmbtuneError(f"a training run named {name!r} already exists ({state_label(existing)}; model "
                       f"{existing.model_path or 'none'}): choose another --run-name, or {how}")


def base_model_spec(config: TrainingConfig, db: Any) -> TrainingConfig:
    """``run:NAME`` / ``run:latest`` as a base model: that run's folder (an unknown run is refused here)."""
    if not config.model.startswith("run:"):
        return config
    return config.replace(model=resolve_model_spec(config.model, db, collection=config.collection))


def require_model_space(model: Any, output_dir: Path, config: TrainingConfig) -> None:
    """Refuse a run whose model and checkpoints will not fit on the output folder's disk, before it trains.

    The saved model is every weight (a LoRA run: the adapter's); each kept checkpoint holds it again with the
    optimiser's two moments of every trained weight.
    """
    parameters = list(model.parameters())
    trained = sum(p.numel() * p.element_size() for p in parameters if p.requires_grad)
    saved = trained if config.lora else sum(p.numel() * p.element_size() for p in parameters)
    require_free_space(output_dir.parent, saved + config.save_total_limit * (saved + 2 * trained),
                       what="the trained model and its checkpoints")
