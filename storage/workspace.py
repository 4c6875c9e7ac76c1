"""The on-disk workspace: where models, indexes, reports and the default database live.

One folder (``--workspace``, else ``EMBTUNE_HOME``, else ``~/.embtune``) holds everything a
user builds, so that backing up or moving a project is copying one folder. Every write of
something a user would hate to lose half-written (an index, a dataset, a model file) goes
through the atomic helpers here: write to a temporary file beside the target, fsync, then
``os.replace`` it, so a crash leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import StorageError

ENV_HOME = "EMBTUNE_HOME"
ENV_DB = "EMBTUNE_DB"


def default_workspace_root() -> Path:
    """The workspace a user gets without saying anything: ``EMBTUNE_HOME`` or ``~/.embtune``."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".embtune").expanduser()


@dataclass(frozen=True)
class Workspace:
    """Named sub-folders of the workspace root; created on first use."""

    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Workspace:
        """Open (and create if needed) the workspace, failing with one line if it is not writable."""
        workspace = cls(Path(root).expanduser().resolve() if root else default_workspace_root().resolve())
        try:
            for folder in (workspace.root, workspace.collections_dir, workspace.models_dir,
                           workspace.runs_dir, workspace.reports_dir, workspace.cache_dir, workspace.uploads_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"workspace {workspace.root} is not writable: {exc.strerror or exc}") from exc
        return workspace

    @property
    def collections_dir(self) -> Path:
        return self.root / "collections"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def uploads_dir(self) -> Path:
        """Files uploaded through the studio, kept so an import can be checked first and confirmed later."""
        return self.root / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def default_db_url(self) -> str:
        return f"sqlite:///{self.root / 'embtune.db'}"

    def db_url(self, explicit: str | None = None) -> str:
        """``--db`` wins, then ``EMBTUNE_DB``, then the SQLite file inside the workspace."""
        return explicit or os.environ.get(ENV_DB) or self.default_db_url

    def collection_dir(self, name: str) -> Path:
        return self.collections_dir / name

    @property
    def finetuning_dir(self) -> Path:
        """Background fine-tuner files: confirmed example images and re-embedded indexes, per collection."""
        return self.root / "finetuning"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    On any exception the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it is renamed to ``target``.

    For outputs that are many files (a model checkpoint): readers that find ``target`` find
    it complete. ``target`` must not exist yet (the caller picks a new name each time, so a
    serving folder is never replaced under a reader). On any exception the staging folder
    is removed.
    """
    import shutil

    target = Path(target)
    if target.exists():
        raise StorageError(f"{target} already exists: refusing to replace a folder that may be in use")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        os.replace(staging, target)
        _fsync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike[str], payload: Any) -> None:
    atomic_write_text(target, json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Directory fsync makes the rename itself durable; not every platform allows it.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
