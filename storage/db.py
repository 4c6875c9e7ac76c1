"""SQLAlchemy persistence: collections, items, labelled pairs, training runs, evaluations.

SQLite inside the workspace is the default so nothing needs setting up; any SQLAlchemy URL
works (PostgreSQL is tested for real), so the SQL stays portable: JSON columns, no
dialect-specific types, timestamps in UTC. The studio, the CLI and background training
processes all read and write the same rows, which is why state that matters lives here and
not in a UI session.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from filelock import FileLock
from sqlalchemy import (
    create_engine,
    delete,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import StorageError
from storage.tables import CollectionRecord, ItemRecord, LabelledPair, LabelQuery
from storage.workspace import check_writable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK_KEY = 0x656D6274  # "embt": the PostgreSQL advisory lock migrations hold
MIGRATION_LOCK_TIMEOUT_S = 120
# Items per INSERT statement when a collection is saved (bounds the rows held in memory at once).
ITEM_INSERT_CHUNK = 5_000
# How long a SQLite writer waits for another process's write lock before giving up with one error line.
SQLITE_BUSY_TIMEOUT_MS = 5_000
# SQLite failures that come from the file or another process, not from embtune's SQL: one line for the user.
_SQLITE_ENVIRONMENT_ERRORS = {"SQLITE_READONLY": "is read-only", "SQLITE_FULL": "is on a full disk",
                              "SQLITE_IOERR": "cannot be read or written", "SQLITE_CANTOPEN": "cannot be opened",
                              "SQLITE_PERM": "may not be written"}


def display_url(url: str) -> str:
    """The URL with any password masked, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision (``storage/migrations``): a new database gets every
    table, one of the first release (``create_all``, no version table) keeps its tables and rows.

    Processes opening the same database at once (torchrun ranks, the studio and its training workers)
    take turns: a lock file beside a SQLite file, an advisory lock on PostgreSQL.
    """
    config = alembic_config()
    with _migration_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def alembic_config() -> AlembicConfig:
    """Alembic's configuration for ``storage/migrations`` (no alembic.ini: the folder is all it needs)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _migration_lock(engine: Engine) -> AbstractContextManager[Any]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return nullcontext()
    return FileLock(f"{database}.migrate.lock", timeout=MIGRATION_LOCK_TIMEOUT_S)


class Database:
    """One engine + session factory for a URL; brings the schema up to date on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine: Engine = create_engine(url, future=True, pool_pre_ping=True)
        except (ArgumentError, NoSuchModuleError, ModuleNotFoundError, ValueError) as exc:
            raise StorageError(f"database URL {display_url(url)!r} is not usable: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            database = self.engine.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                # SQLite writes its journal beside the file: a folder it cannot write fails every later write
                check_writable(database, what="database")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            migrate(self.engine)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"cannot connect to database {display_url(url)}: {reason}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error.

        A database another process keeps locked past the busy timeout, a read-only or full one, is a
        ``StorageError`` naming it (nothing of the transaction was written); any other error is a bug.
        """
        session = self._sessions()
        try:
            yield session
            session.commit()
        except OperationalError as exc:
            with suppress(SQLAlchemyError):
                session.rollback()
            raise self._unavailable(exc) from exc
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()

    def _unavailable(self, exc: OperationalError) -> Exception:
        """The user's one line for a database that refused a transaction, or ``exc`` itself for a bug's."""
        reason = str(exc.orig or exc).strip().splitlines()[0]
        where = display_url(self.url)
        if self.engine.dialect.name != "sqlite":
            return StorageError(f"database {where} is unavailable ({reason}): nothing was written; retry when it "
                                "is reachable")
        code = "_".join(str(getattr(exc.orig, "sqlite_errorname", "")).split("_")[:2])
        if code in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return StorageError(f"database {where} is locked by another process (waited "
                                f"{SQLITE_BUSY_TIMEOUT_MS / 1000:g} s): nothing was written; retry when the other "
                                "writer has finished")
        what = _SQLITE_ENVIRONMENT_ERRORS.get(code)
        return exc if what is None else StorageError(f"database {where} {what} ({reason}): nothing was written")

    def ping(self) -> None:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise StorageError(f"cannot connect to database {display_url(self.url)}: {reason}") from exc

    # -- collections -------------------------------------------------------------------

    def save_collection(self, fields: Mapping[str, Any], items: Iterable[Mapping[str, Any]]) -> CollectionRecord:
        """Create or replace a collection row and all its items in one transaction."""
        with self.session() as session:
            record = session.scalar(select(CollectionRecord).where(CollectionRecord.name == fields["name"]))
            if record is None:
                record = CollectionRecord(**fields)
                session.add(record)
                session.flush()
            else:
                for key, value in fields.items():
                    setattr(record, key, value)
                session.execute(delete(ItemRecord).where(ItemRecord.collection_id == record.id))
            # Inserted in chunks within the one transaction: a collection of millions of items (a Ray-built
            # one streams them from its parts) never has all its rows in memory at once.
            rows = iter(items)
            while chunk := [
                {
                    "collection_id": record.id,
                    "item_key": item["item_key"],
                    "text": item.get("text"),
                    "image_path": item.get("image_path"),
                    "metadata_json": dict(item.get("metadata_json") or {}),
                }
                for item in itertools.islice(rows, ITEM_INSERT_CHUNK)
            ]:
                session.execute(ItemRecord.__table__.insert(), chunk)
            record.item_count = session.scalar(
                select(func.count()).select_from(ItemRecord).where(ItemRecord.collection_id == record.id)
            ) or 0
            return record

    def list_collections(self) -> list[CollectionRecord]:
        with self.session() as session:
            return list(session.scalars(select(CollectionRecord).order_by(CollectionRecord.name)))

    def get_collection(self, name: str) -> CollectionRecord | None:
        with self.session() as session:
            return session.scalar(select(CollectionRecord).where(CollectionRecord.name == name))

    def delete_collection(self, name: str) -> bool:
        with self.session() as session:
            record = session.scalar(select(CollectionRecord).where(CollectionRecord.name == name))
            if record is None:
                return False
            session.execute(delete(ItemRecord).where(ItemRecord.collection_id == record.id))
            session.delete(record)
            return True

    def collection_items(self, name: str) -> list[ItemRecord]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(ItemRecord)
                    .join(CollectionRecord)
                    .where(CollectionRecord.name == name)
                    .order_by(ItemRecord.id)
                )
            )

    def update_collection(self, name: str, **fields: Any) -> None:
        """Change a collection row's fields (model, path...) in one transaction, items untouched.

        The background fine-tuner swaps a collection to a new model + index with one call:
        another process reads either the old pair or the new one, never a mix.
        """
        with self.session() as session:
            record = session.scalar(select(CollectionRecord).where(CollectionRecord.name == name))
            if record is None:
                raise StorageError(f"collection {name!r} does not exist")
            for key, value in fields.items():
                setattr(record, key, value)

    # -- labels ---------------------------------------------------------------------------

    def add_labels(self, labels: Iterable[Mapping[str, Any]]) -> int:
        rows = [dict(label) for label in labels]
        for row in rows:
            score = row.get("score")
            if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
                raise StorageError(f"label for query {row.get('query')!r}: score {score!r} is outside 0..1")
        with self.session() as session:
            session.add_all(LabelledPair(**row) for row in rows)
        return len(rows)

    def add_label(self, **fields: Any) -> int:
        """Save one label at once (the Label page's buttons) and return its id, for undo."""
        score = fields.get("score")
        if not isinstance(score, (int, float)) or not 0.0 <= float(score) <= 1.0:
            raise StorageError(f"label for query {fields.get('query')!r}: score {score!r} is outside 0..1")
        with self.session() as session:
            label = LabelledPair(**fields)
            session.add(label)
            session.flush()
            return label.id

    def delete_label(self, label_id: int) -> bool:
        """Undo one label (the Label page's "undo"); False when it was already gone."""
        with self.session() as session:
            return bool(session.execute(delete(LabelledPair).where(LabelledPair.id == label_id)).rowcount)

    def add_label_queries(self, collection_name: str, queries: Iterable[str], source: str | None = None) -> int:
        """Queue queries for labelling; ones already queued for the collection are not added twice."""
        with self.session() as session:
            known = set(session.scalars(select(LabelQuery.query).where(LabelQuery.collection_name == collection_name)))
            fresh = list(dict.fromkeys(q.strip() for q in queries if q and q.strip() and q.strip() not in known))
            session.add_all(LabelQuery(collection_name=collection_name, query=q, source=source) for q in fresh)
            return len(fresh)

    def label_queries(self, collection_name: str) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(LabelQuery.query).where(LabelQuery.collection_name == collection_name)
                                        .order_by(LabelQuery.id)))

    def last_annotator(self) -> str | None:
        """Who saved the newest label by hand (not an import), if anyone: a new tab's annotator."""
        with self.session() as session:
            return session.scalar(select(LabelledPair.annotator)
                                  .where(LabelledPair.annotator.not_in(("anonymous", "imported")))
                                  .order_by(LabelledPair.id.desc()).limit(1))

    def labels(self, collection_name: str | None = None) -> list[LabelledPair]:
        with self.session() as session:
            query = select(LabelledPair).order_by(LabelledPair.id)
            if collection_name is not None:
                query = query.where(LabelledPair.collection_name == collection_name)
            return list(session.scalars(query))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the studio read while a training process writes; foreign keys make cascades work.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()
