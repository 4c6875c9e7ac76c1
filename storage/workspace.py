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
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import StorageError

ENV_HOME = "EMBTUNE_HOME"
ENV_DB = "EMBTUNE_DB"
# Free space required beyond a write's estimated size: a tenth more, and at least this much besides.
FREE_SPACE_FRACTION = 0.1
FREE_SPACE_RESERVE_BYTES = 16 << 20
# Below this much free space, a write that failed is reported as a full disk.
DISK_FULL_BYTES = 1 << 20


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


# -- paths a user gives, checked before the long work that ends by writing there ---------------------------


def check_writable(target: str | os.PathLike[str], *, what: str, folder: bool = False) -> Path:
    """Refuse at once a place that cannot be written: a file among its parents, a folder where a file goes (or
    a file where a folder goes), a folder that does not let us create files. Creates nothing.

    Checked before an evaluation, a projection or a training whose result would otherwise be lost at the end.
    """
    path = Path(target).expanduser()
    if path.exists() and path.is_dir() != folder:
        raise StorageError(f"{what} {target} is {'a file' if folder else 'a folder'}: give "
                           f"{'a folder' if folder else 'a file path'}")
    existing = path if folder and path.is_dir() else next(p for p in path.parents if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise StorageError(f"{what} {target}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise StorageError(f"{what} {target}: cannot write in {existing}: {exc.strerror or exc}") from None
    return path


def require_free_space(target: str | os.PathLike[str], needed_bytes: int, *, what: str) -> None:
    """Refuse a write that the disk holding ``target`` cannot take (``needed_bytes`` and a margin), before it
    starts: a full disk half-way would cost the work done so far."""
    path = Path(target)
    existing = next((p for p in (path, *path.parents) if p.exists()), path.anchor or ".")
    free = shutil.disk_usage(existing).free
    wanted = int(needed_bytes * (1 + FREE_SPACE_FRACTION)) + FREE_SPACE_RESERVE_BYTES
    if free < wanted:
        raise StorageError(f"not enough free space for {what} in {existing}: about {_size(needed_bytes)} needed "
                           f"(+ {_size(wanted - needed_bytes)} margin), {_size(free)} free")


def write_error(exc: OSError, what: str) -> StorageError:
    """An ``OSError`` met while writing ``what`` as the user's one line: the file and the cause."""
    where = f" ({exc.filename})" if exc.filename else ""
    return StorageError(f"cannot write {what}{where}: {exc.strerror or exc}")


def disk_full_error(exc: BaseException, target: str | os.PathLike[str]) -> StorageError | None:
    """The user's one line when ``exc`` (from a library writing under ``target``: a checkpoint, a model) came
    from the disk filling up, whatever the library made of it; None when the disk has room."""
    path = Path(target)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or isinstance(exc, StorageError):
        return None
    free = shutil.disk_usage(existing).free
    if free >= DISK_FULL_BYTES:
        return None
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return StorageError(f"the disk holding {existing} is full ({_size(free)} free): {reason}")


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"
