"""What every studio page shares: the workspace and database, cached models and collections,
pickers, and the one way a user mistake is shown (a message, never a traceback).

Pages hold widgets only and call ``core``/``storage``; this module is the glue they share.
The workspace and database come from ``EMBTUNE_HOME``/``EMBTUNE_DB``, which ``embtune studio``
sets, so a reload, a second tab or a restart sees the same state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from core.errors import EmbtuneError
from storage.db import Database
from storage.workspace import ENV_DB, Workspace

ANNOTATOR_KEY = "annotator"


@st.cache_resource(show_spinner=False)
def _open(root: str | None, url: str | None) -> tuple[Workspace, Database]:
    workspace = Workspace.open(root)
    return workspace, Database(workspace.db_url(url))


def workspace_and_db() -> tuple[Workspace, Database]:
    """The studio's workspace and database (opened once per process)."""
    return _open(os.environ.get("EMBTUNE_HOME"), os.environ.get(ENV_DB))


@contextmanager
def user_errors() -> Iterator[None]:
    """Show an ``EmbtuneError`` as a message on the page; the rest of the page keeps working."""
    try:
        yield
    except EmbtuneError as exc:
        st.error(str(exc))


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def embedder(spec: str) -> Any:
    from core.embedders import load_embedder

    return load_embedder(spec)


@st.cache_resource(show_spinner="Opening the collection…", max_entries=8)
def _collection(name: str, path: str, fingerprint: str, updated: str) -> Any:
    # The key holds the row's path, model fingerprint and update time: a re-index or a swapped-in
    # fine-tuned model is a new key, so pages pick it up without a restart.
    from core.collection.named import open_collection

    workspace, db = workspace_and_db()
    record = db.get_collection(name)
    return open_collection(name, workspace=workspace, db=db, embedder=embedder(record.model_spec))


def collection_key(name: str) -> tuple[str, str, str]:
    """What identifies a collection's current contents: its folder, model fingerprint and update time."""
    from core.collection.named import collection_record

    _, db = workspace_and_db()
    record = collection_record(name, db)
    return record.path, record.model_fingerprint, str(record.updated_at)


def collection(name: str) -> Any:
    """A collection with its model loaded, cached until its row changes."""
    return _collection(name, *collection_key(name))


def collection_names() -> list[str]:
    _, db = workspace_and_db()
    return [record.name for record in db.list_collections()]


def pick_collection(key: str, *, label: str = "Collection") -> str | None:
    """A collection picker; says what to do when the workspace has none."""
    names = collection_names()
    remembered = st.session_state.get("collection")
    if remembered and remembered not in names:
        st.warning(f"Collection {remembered!r} no longer exists (deleted elsewhere).")
    if not names:
        st.info("No collections yet: import a file on the Data page first.")
        return None
    index = names.index(remembered) if remembered in names else 0
    name = st.selectbox(label, names, index=index, key=key)
    st.session_state["collection"] = name
    return name


def model_choices(collection_name: str | None = None) -> list[str]:
    """The bundled model, then every run the gate let through (``run:NAME``), newest first."""
    from core.training.runs import servable_specs

    _, db = workspace_and_db()
    return ["default", *servable_specs(db, collection_name)]


def gate_verdict(gate: Any) -> None:
    """The gate's decision in colour, with the figures it rests on (train and compare pages)."""
    if gate is None:
        return
    rows = [{"measure": f"{gate.metric} (held-out, {gate.queries} queries)", "before": gate.before,
             "after": gate.after, "Δ": gate.delta, "95% CI": f"[{gate.ci_low:+.4f}, {gate.ci_high:+.4f}]"
             if gate.ci_low is not None else ""}] if gate.before is not None else []
    if gate.forgetting:
        f = gate.forgetting
        rows.append({"measure": f"forgetting: {f['data']} NDCG@10 ({f['queries']} queries)", "before": f["before"],
                     "after": f["after"], "Δ": f["delta"], "95% CI": f"[{f['ci_low']:+.4f}, {f['ci_high']:+.4f}]"})
    show = {"finished": st.success, "not proven": st.warning, "rejected": st.error}.get(gate.status, st.info)
    show(gate.summary())
    if rows:
        import pandas as pd

        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def annotator_name() -> str:
    """Who is labelling; asked in the sidebar, kept in the page's address (a reload keeps it) and, for a new
    tab, taken from the newest label in this workspace."""
    _, db = workspace_and_db()
    remembered = st.session_state.get(ANNOTATOR_KEY) or st.query_params.get(ANNOTATOR_KEY) or db.last_annotator()
    name = st.sidebar.text_input("Annotator", value=remembered or "", placeholder="your name",
                                 key="annotator_input").strip()
    st.session_state[ANNOTATOR_KEY] = name
    if name and st.query_params.get(ANNOTATOR_KEY) != name:
        st.query_params[ANNOTATOR_KEY] = name
    return name
