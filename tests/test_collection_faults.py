"""A collection's database rows and its folder never disagree, whatever fails: two writers at once, a database
another process keeps locked, a re-index killed with SIGKILL, a kill between the row's commit and the folder's
switch, a full disk. After each, the rows equal the folder and every earlier collection searches exactly as
before (``core.collection.catalogue`` has the protocol)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.collection import Collection, read_manifest
from core.collection.named import index_file, search_collection
from core.errors import CollectionError, EmbtuneWarning
from storage.db import Database
from storage.workspace import Workspace
from tests.conftest import write_csv
from tests.test_cli import one_error_line

WORDS = ["chimney", "pipe", "drill", "garden", "hose", "paint", "труба", "дымоход"]
QUERIES = ["garden hose", "chimney pipe", "paint"]


def table(path: Path, rows: int, *, offset: int = 0) -> Path:
    return write_csv(path, [["id", "name", "category"]] + [
        [f"P{offset + i}", f"{WORDS[i % 8]} {WORDS[(i * 3 + offset) % 8]} {i}", WORDS[(i + offset) % 3]]
        for i in range(rows)])


def agreement(db: Database, name: str) -> tuple[int, int, list[str]]:
    """The row's item count, the folder's (its published generation) and the files the folder holds; the
    database's items must be the folder's, id for id."""
    record = db.get_collection(name)
    manifest = read_manifest(record.path)
    assert manifest["generation"] == record.generation
    loaded = Collection.load(record.path)
    assert [item.item_key for item in db.collection_items(name)] == loaded.ids
    return record.item_count, manifest["count"], sorted(f.name for f in Path(record.path).iterdir() if f.is_file())


def answers(name: str, workspace: Workspace, db: Database) -> list[list[tuple[str, float]]]:
    return [[(hit.id, round(hit.score, 5)) for hit in search_collection(name, query, k=3, workspace=workspace, db=db)]
            for query in QUERIES]


def published_files(generation: int) -> list[str]:
    return [f"index-{generation}.faiss", f"items-{generation}.jsonl", "manifest.json", f"vectors-{generation}.npy"]


@pytest.fixture()
def shop(tmp_path: Path, workspace_dir: Path, tiny_model_dir: Path):
    """A workspace with two collections: ``emoji`` (40 items), about to be re-indexed, and ``other`` (12)."""
    from core.embedders import load_embedder

    workspace = Workspace.open(workspace_dir)
    db = Database(workspace.db_url())
    embedder = load_embedder(str(tiny_model_dir), device="cpu", fallback=False)
    for name, rows, offset in (("emoji", 40, 0), ("other", 12, 5)):
        index_file(table(tmp_path / f"{name}.csv", rows, offset=offset), collection=name, text_column="name",
                   id_column="id", workspace=workspace, db=db, embedder=embedder, show_progress=False)
    before = {name: answers(name, workspace, db) for name in ("emoji", "other")}
    return workspace, db, embedder, before


def test_a_second_indexer_waits_for_the_first_and_the_last_commit_is_whole(shop, tmp_path: Path) -> None:
    workspace, db, embedder, before = shop
    first_inside, second_waiting = threading.Event(), threading.Event()
    notices: list[str] = []
    failures: list[BaseException] = []

    def hold_until_the_second_waits(_progress) -> None:  # called while the first holds the collection's lock
        first_inside.set()
        second_waiting.wait(30)

    def index(rows: int, offset: int, **options) -> None:
        try:
            index_file(table(tmp_path / f"new-{rows}.csv", rows, offset=offset), collection="emoji",
                       text_column="name", id_column="id", workspace=workspace, db=db, embedder=embedder,
                       show_progress=False, **options)
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    first = threading.Thread(target=index, args=(60, 100), kwargs={"progress": hold_until_the_second_waits})
    first.start()
    assert first_inside.wait(60)
    second = threading.Thread(target=index, args=(25, 200),
                              kwargs={"notice": lambda line: (notices.append(line), second_waiting.set())})
    second.start()
    first.join(120)
    second.join(120)
    assert not failures, failures
    assert notices == [f"collection 'emoji' is being written by another process (pid {os.getpid()}); waiting…"]
    assert agreement(db, "emoji") == (25, 25, published_files(3))  # the second's, whole; nothing of the first left
    assert answers("other", workspace, db) == before["other"]


def test_with_no_wait_a_busy_collection_is_one_error_and_the_writer_finishes(shop, tmp_path: Path) -> None:
    from core.collection.catalogue import collection_lock

    workspace, db, embedder, before = shop
    busy = rf"collection 'emoji' is being written by another process \(pid {os.getpid()}\): try again when it has"
    with collection_lock(workspace, "emoji"), pytest.raises(CollectionError, match=busy):
        index_file(table(tmp_path / "new.csv", 25), collection="emoji", text_column="name", workspace=workspace,
                   db=db, embedder=embedder, show_progress=False, wait=False)
    assert agreement(db, "emoji") == (40, 40, published_files(1))
    assert answers("emoji", workspace, db) == before["emoji"]


@contextlib.contextmanager
def write_locked(db: Database):
    """Another connection holding SQLite's write lock (``BEGIN IMMEDIATE``) until the block ends."""
    holder = sqlite3.connect(db.engine.url.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_locked_database_is_one_error_and_the_collection_is_unchanged(shop, run_cli, tmp_path: Path,
                                                                         tiny_model_dir: Path, monkeypatch) -> None:
    import storage.db

    workspace, db, _, before = shop
    monkeypatch.setattr(storage.db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # the CLI's database connects after this
    with write_locked(db):
        result = run_cli("index", str(table(tmp_path / "big.csv", 300, offset=7)), "--collection", "emoji",
                         "--text-column", "name", "--id-column", "id", "--model", str(tiny_model_dir))
    line = one_error_line(result)
    assert line == (f"error: collection 'emoji' is unchanged: database {workspace.db_url()} is locked by another "
                    "process (waited 0.3 s): nothing was written; retry when the other writer has finished")
    assert agreement(db, "emoji") == (40, 40, published_files(1))  # the staged generation was removed
    assert {name: answers(name, workspace, db) for name in before} == before


def test_a_reindex_killed_at_its_commit_leaves_the_old_collection(shop, tmp_path: Path, workspace_dir: Path,
                                                                  tiny_model_dir: Path) -> None:
    """A real ``embtune index`` process, held at its database commit by another connection's write lock (the
    staged generation's manifest appearing says it got there), killed with SIGKILL."""
    workspace, db, _, before = shop
    staged = workspace.collection_dir("emoji") / "manifest-2.json"
    env = {**os.environ, "EMBTUNE_HOME": str(workspace_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with write_locked(db):
        process = subprocess.Popen([sys.executable, "-m", "embtune", "index", str(table(tmp_path / "big.csv", 300)),
                                    "--collection", "emoji", "--text-column", "name", "--id-column", "id", "--model",
                                    str(tiny_model_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while not staged.exists():
                assert process.poll() is None, process.stdout.read().decode(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the re-index never reached its commit"
                time.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()
            process.wait(30)
    assert process.returncode == -signal.SIGKILL
    count, folder_count, files = agreement(db, "emoji")
    assert (count, folder_count) == (40, 40) and set(published_files(1)) <= set(files)
    assert {name: answers(name, workspace, db) for name in before} == before
    # the next re-index takes the lock the killed process held (the kernel released it) and clears its leftovers
    index_file(table(tmp_path / "again.csv", 30, offset=3), collection="emoji", text_column="name", id_column="id",
               workspace=workspace, db=db, model=str(tiny_model_dir), show_progress=False, wait=False)
    assert agreement(db, "emoji") == (30, 30, published_files(3))


def test_a_kill_between_the_rows_commit_and_the_folders_switch_is_rolled_forward(shop, tmp_path: Path) -> None:
    """The state a SIGKILL right after the database commit leaves (the row names the staged generation, the
    folder's manifest still the old one), made with the protocol's own steps stopped before ``publish``."""
    workspace, db, embedder, before = shop
    new = Collection.from_items([f"N{i}" for i in range(25)], [f"{WORDS[i % 8]} new {i}" for i in range(25)],
                                embedder, model_spec=embedder.spec, show_progress=False)
    folder = new.save(workspace.collection_dir("emoji"), publish_now=False)
    db.save_collection({"name": "emoji", "model_spec": embedder.spec, "model_fingerprint": embedder.fingerprint,
                        "dimension": embedder.dimension, "index_kind": "auto", "path": str(folder),
                        "generation": new.info.generation},
                       [{"item_key": i, "text": new.item(i)["text"]} for i in new.ids])
    assert read_manifest(folder)["generation"] == 1  # the folder still says the old generation
    hits = search_collection("emoji", "garden new", k=3, workspace=workspace, db=db)
    assert hits[0].id.startswith("N")  # the new items, as the database says
    assert agreement(db, "emoji") == (25, 25, published_files(2))  # rolled forward: manifest switched, old gone
    assert answers("other", workspace, db) == before["other"]


def test_rows_that_disagree_with_the_folder_are_repaired_from_it_with_a_warning(shop, tmp_path: Path) -> None:
    """A row written before generations were recorded, describing fewer items than its folder holds (what an
    interrupted re-index left): opening rewrites the row from the folder and warns."""
    workspace, db, _, before = shop
    db.update_collection("emoji", generation=None, item_count=3)
    with pytest.warns(EmbtuneWarning, match=r"collection 'emoji': the database described 3 items \(generation None\)"
                                            r", its folder holds 40 \(generation 1\); the database was repaired"):
        assert answers("emoji", workspace, db) == before["emoji"]
    assert agreement(db, "emoji") == (40, 40, published_files(1))


# -- a full disk -----------------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A 256 KB tmpfs mounted at a folder of the test (root can mount one); None where it cannot be mounted."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    except OSError:  # no mount command
        mounted = False
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazily: a file a failure left open


def test_a_full_disk_while_indexing_is_one_line_and_leaves_no_partial_collection(
        run_cli, small_disk: Path | None, tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    """On the 256 KB tmpfs: the free-space check refuses before writing (its margin is far above 256 KB); with
    the margin off a small collection fits; with the check off, writing a bigger one (about 300 KB) meets the full
    disk itself. Without a tmpfs, the index writer is replaced by one failing with ENOSPC as it would."""
    import core.collection.disk
    import storage.workspace

    root = small_disk / "workspace" if small_disk is not None else tmp_path / "workspace"
    common = ["--workspace", str(root), "--db", f"sqlite:///{tmp_path / 'elsewhere.db'}"]

    def index(name: str, rows: int):
        return run_cli(*common, "index", str(table(tmp_path / f"{name}.csv", rows)), "--collection", name,
                       "--text-column", "name", "--model", str(tiny_model_dir))

    if small_disk is not None:
        assert "error: not enough free space for collection small" in one_error_line(index("small", 8))
        monkeypatch.setattr(storage.workspace, "FREE_SPACE_RESERVE_BYTES", 0)
    assert index("small", 8).code == 0
    workspace, db = Workspace(root), Database(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    before = answers("small", workspace, db)
    if small_disk is not None:
        monkeypatch.setattr(core.collection.disk, "require_free_space", lambda *args, **kwargs: None)
    else:
        import errno

        def full(_index, target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

        monkeypatch.setattr(core.collection.disk, "write_index", full)
    line = one_error_line(index("big", 900))  # under the progress bar's 1000 rows: the error is all of stderr
    assert re.fullmatch(rf"error: cannot write collection {re.escape(str(root / 'collections' / 'big'))}"
                        r"( \(\S+\))?: No space left on device", line), line
    assert db.get_collection("big") is None
    assert not (root / "collections" / "big").exists()
    assert answers("small", workspace, db) == before


def test_a_full_disk_before_training_is_one_line_and_writes_no_run(run_cli, small_disk: Path | None, tmp_path: Path,
                                                                   tiny_model_dir: Path, monkeypatch) -> None:
    """The model and its checkpoints would not fit on the output folder's disk: refused before the run's row and
    before any step. On the 256 KB tmpfs for real; without one, the disk is reported as having nothing free."""
    if small_disk is None:
        import shutil

        import storage.workspace

        monkeypatch.setattr(storage.workspace.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    where = small_disk if small_disk is not None else tmp_path / "full"
    where.mkdir(exist_ok=True)
    data = write_csv(tmp_path / "pairs.csv", [["anchor", "positive"]] + [[f"{w} {i}", f"{w} item {i}"]
                                                                         for i, w in enumerate(WORDS * 3)])
    line = one_error_line(run_cli("train", "--data", str(data), "--output-dir", str(where / "model"), "--model",
                                  str(tiny_model_dir), "--device", "cpu", "--no-forgetting-check"))
    assert line.startswith(f"error: not enough free space for the trained model and its checkpoints in {where}: "), line
    assert run_cli("runs", "--json").out.strip() == "[]"
    assert not list(where.iterdir())
