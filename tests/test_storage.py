"""Storage on SQLite and on a real PostgreSQL server: the same code, the same results."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from core.errors import StorageError
from storage.db import Database
from storage.runs import RunStore
from storage.tables import QueryResult
from storage.workspace import Workspace, atomic_path, atomic_write_json
from tests.postgres import temporary_postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    # Not under pytest's tmp_path: the postgres user must be able to enter every parent folder.
    folder = Path(tempfile.mkdtemp(prefix="embtune-pg-"))
    folder.chmod(0o755)
    with temporary_postgres(folder / "cluster") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        return Database(f"sqlite:///{tmp_path / 'embtune.db'}")
    database = Database(request.getfixturevalue("postgres_url"))
    from storage.tables import Base

    Base.metadata.drop_all(database.engine)  # each test starts from an empty schema
    Base.metadata.create_all(database.engine)
    return database


def test_collection_and_items_round_trip(db: Database) -> None:
    fields = {"name": "catalogue", "model_spec": "default", "model_fingerprint": "f" * 64, "dimension": 384,
              "index_kind": "auto", "path": "/tmp/c"}
    items = [{"item_key": "P1", "text": "Труба", "metadata_json": {"category": "chimney", "price": 1.5}},
             {"item_key": "P2", "text": "Drill", "image_path": "img/p2.png", "metadata_json": {}}]
    record = db.save_collection(fields, items)
    assert record.item_count == 2
    stored = db.collection_items("catalogue")
    assert [(i.item_key, i.text, i.image_path) for i in stored] == [("P1", "Труба", None),
                                                                   ("P2", "Drill", "img/p2.png")]
    assert stored[0].metadata_json == {"category": "chimney", "price": 1.5}
    again = db.save_collection({**fields, "dimension": 256}, items[:1])  # re-index replaces items
    assert again.item_count == 1 and db.get_collection("catalogue").dimension == 256
    assert [c.name for c in db.list_collections()] == ["catalogue"]
    assert db.delete_collection("catalogue") is True
    assert db.get_collection("catalogue") is None and db.collection_items("catalogue") == []


def test_items_are_inserted_in_chunks_and_a_source_failing_midway_keeps_the_previous_items(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("storage.db.ITEM_INSERT_CHUNK", 3)  # 8 items: three INSERTs in the one transaction
    fields = {"name": "big", "model_spec": "default", "model_fingerprint": "f" * 64, "dimension": 384,
              "index_kind": "auto", "path": "/tmp/big"}
    record = db.save_collection(fields, ({"item_key": f"P{i}", "text": f"item {i}"} for i in range(8)))
    assert record.item_count == 8
    assert [item.item_key for item in db.collection_items("big")] == [f"P{i}" for i in range(8)]

    def dies_after_five() -> Iterator[dict[str, str]]:
        yield from ({"item_key": f"Q{i}", "text": f"new {i}"} for i in range(5))
        raise OSError("parts folder vanished")

    with pytest.raises(OSError, match="vanished"):
        db.save_collection({**fields, "dimension": 256}, dies_after_five())
    assert [item.item_key for item in db.collection_items("big")] == [f"P{i}" for i in range(8)]
    assert db.get_collection("big").dimension == 384


def test_labels_keep_annotator_time_and_refuse_bad_scores(db: Database) -> None:
    db.add_labels([{"collection_name": "c", "query": "дымо ход", "item_key": "P1", "score": 1.0, "annotator": "ana"},
                   {"collection_name": "c", "query": "дымо ход", "item_key": "P2", "score": 0.5, "annotator": "bo"}])
    labels = db.labels("c")
    assert [(label.item_key, label.score, label.annotator) for label in labels] == [("P1", 1.0, "ana"),
                                                                                  ("P2", 0.5, "bo")]
    assert all(label.created_at is not None for label in labels)
    with pytest.raises(StorageError, match=r"score 1\.5 is outside 0\.\.1"):
        db.add_labels([{"query": "q", "item_key": "P1", "score": 1.5}])
    assert len(db.labels("c")) == 2  # nothing half-written


def test_runs_and_per_query_evaluations_are_stored(db: Database) -> None:
    """A run through its life as the trainer records it, and an evaluation with its per-query values, read back
    by another process (a second Database on the same URL)."""
    runs = RunStore(db)
    runs.queue("run-1", collection_name="c", config={"epochs": 1})
    runs.start("run-1", takeover=True, model_path="/models/run-1")
    runs.update("run-1", progress={"step": 3, "total_steps": 10}, epoch_metrics=[{"epoch": 1, "loss": 0.5}])
    runs.update("run-1", status="finished", before_after={"gate": {"status": "finished"}})
    evaluation_id = runs.save_evaluation(model_spec="run:run-1", model_fingerprint="f" * 64, data_source="q.csv",
                                         metrics={"ndcg@10": 0.5}, run_name="run-1", per_query=[
                                             {"query_id": "Q1", "dimension": 384, "metric": "ndcg@10", "value": 0.7},
                                             {"query_id": "Q2", "dimension": 384, "metric": "ndcg@10", "value": 0.3}])
    other = RunStore(Database(db.url))
    run = other.get("run-1")
    assert (run.status, run.collection_name, run.config, run.model_path) == ("finished", "c", {"epochs": 1},
                                                                               "/models/run-1")
    assert run.progress == {"step": 3, "total_steps": 10} and run.epoch_metrics[0]["loss"] == 0.5
    assert run.started_at is not None and run.finished_at is not None and run.finished_at >= run.started_at
    assert [r.name for r in other.list("c")] == ["run-1"] and other.list("elsewhere") == []
    with Database(db.url).session() as session:
        values = sorted((r.query_id, r.value) for r in session.scalars(
            select(QueryResult).where(QueryResult.evaluation_id == evaluation_id)))
    assert values == [("Q1", 0.7), ("Q2", 0.3)]


def test_unreachable_database_is_one_clear_line() -> None:
    with pytest.raises(StorageError, match=r"cannot connect to database postgresql\+psycopg2://u:\*\*\*@127\.0\.0\.1:1"):
        Database("postgresql+psycopg2://u:secret@127.0.0.1:1/x")


def test_malformed_database_url() -> None:
    with pytest.raises(StorageError, match="is not usable"):
        Database("not a url")


def test_workspace_folders_and_db_url_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = Workspace.open(tmp_path / "ws")
    assert workspace.collections_dir.is_dir() and workspace.models_dir.is_dir()
    monkeypatch.setenv("EMBTUNE_DB", "sqlite:///from-env.db")
    assert workspace.db_url() == "sqlite:///from-env.db"
    assert workspace.db_url("sqlite:///explicit.db") == "sqlite:///explicit.db"
    monkeypatch.delenv("EMBTUNE_DB")
    assert workspace.db_url() == f"sqlite:///{workspace.root / 'embtune.db'}"


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# -- schema migrations ----------------------------------------------------------------------------


def test_a_first_release_database_opens_upgraded_with_its_rows(tmp_path: Path) -> None:
    """A workspace database the first release made (create_all, no alembic_version) keeps every row and
    reaches the newest revision; the rows are read back through today's code."""
    import sqlite3

    from alembic.script import ScriptDirectory

    from storage.db import alembic_config
    from storage.runs import RunStore

    path = tmp_path / "embtune.db"
    with sqlite3.connect(path) as connection:
        connection.executescript((Path(__file__).parent / "data" / "first_release_schema.sql").read_text())
        connection.execute("INSERT INTO collections (name, model_spec, model_fingerprint, dimension, index_kind, path, "
                           "item_count, created_at, updated_at) VALUES ('catalogue', 'minilm', 'ab', 384, 'auto', "
                           "'/x', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
        connection.execute("INSERT INTO labelled_pairs (collection_name, query, item_key, score, annotator, created_at)"
                           " VALUES ('catalogue', 'дымоход', 'P1', 1.0, 'me', '2026-01-01 00:00:00')")
        connection.execute("INSERT INTO training_runs (name, collection_name, status, config, progress, epoch_metrics, "
                           "before_after, created_at) VALUES ('old-run', 'catalogue', 'done', '{}', '{}', '[]', '{}', "
                           "'2026-01-01 00:00:00')")
    assert "alembic_version" not in {row[0] for row in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}

    db = Database(f"sqlite:///{path}")
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head
    assert db.get_collection("catalogue").model_spec == "minilm"
    assert [(label.query, label.item_key) for label in db.labels("catalogue")] == [("дымоход", "P1")]
    assert [run.name for run in RunStore(db).list("catalogue")] == ["old-run"]
    Database(f"sqlite:///{path}")  # opening again: already at head, nothing to do
    assert db.get_collection("catalogue") is not None


def test_the_migrations_build_exactly_the_tables_the_code_declares(tmp_path: Path) -> None:
    """A new database is built by the migrations alone; alembic's autogenerate finds nothing to add or
    drop against ``storage.tables`` (a model changed without a migration fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.tables import Base

    db = Database(f"sqlite:///{tmp_path / 'new.db'}")
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
