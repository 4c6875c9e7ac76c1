"""Label: score query/item pairs (0 / 0.5 / 1 or finer), with candidates chosen to teach the most."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core import labelling
from webapp import widgets

st.title("Label")
workspace, db = widgets.workspace_and_db()
annotator = widgets.annotator_name()
name = widgets.pick_collection("label_collection")
if not name:
    st.stop()
if not annotator:
    st.warning("Type your name as annotator in the sidebar: every label is saved with it.")

undo_stack: list[int] = st.session_state.setdefault("undo_stack", [])
labels = db.labels(name)

# -- progress -------------------------------------------------------------------------------------
progress = labelling.label_progress(labels)
first, second, third = st.columns(3)
first.metric("Labelled pairs", progress["pairs"])
second.metric("Queries covered", progress["queries"])
third.metric("Annotators", len(progress["annotators"]))

# -- the query --------------------------------------------------------------------------------------
queued = db.label_queries(name)
mode = st.radio("Query source", ["Next unlabelled", "From the query list", "Type a query"], horizontal=True,
                key="label_mode")
query: str | None = None
if mode == "Next unlabelled":
    # The query stays until the analyst asks for the next one, so several candidates can be scored; a query
    # once shown is never offered again in this session, labelled or not.
    current = st.session_state.get("label_current")
    served: list[str] = st.session_state.setdefault("label_served", [])
    if st.button("Next unlabelled query", key="label_next") or current not in queued:
        current = labelling.next_unlabelled_query(queued, labels, annotator or "anonymous", after=current,
                                                  served=served)
        st.session_state["label_current"] = current
        if current is not None:
            served.append(current)
    query = current
    if query is None:
        st.info("Every queued query has labels from you: import more queries below, or type one.")
    else:
        st.markdown(f"**{query}**  ·  {len(queued)} queued")
elif mode == "From the query list":
    query = st.selectbox("Queued query", queued, key="label_pick") if queued else None
    if not queued:
        st.info("No queued queries yet: import a query list below.")
else:
    query = st.text_input("Query", key="label_typed").strip() or None

with st.sidebar.expander("Candidates"):
    k = st.number_input("Top-k from the model", 1, 50, 5, key="label_k")
    uncertain = st.number_input("Uncertain extras", 0, 50, 5, key="label_uncertain")
    second_model = st.selectbox("Second model (disagreements first)", ["(none)", *widgets.model_choices(name)[1:]],
                                key="label_second_model")

# -- candidates -----------------------------------------------------------------------------------
# A click on a score saves the label in the button's callback, then the page reruns, so the counters and the
# histogram above and below count it at once; the candidate list is computed once per query and kept while it
# is scored.


def _save(query: str, candidate: labelling.Candidate, score: float) -> None:
    label_id = db.add_label(collection_name=name, query=query, item_key=candidate.item_id, item_text=candidate.text,
                            score=float(score), annotator=annotator or "anonymous")
    undo_stack.append(label_id)
    st.toast(f"saved {score:g} for {candidate.item_id}")


def _save_fine(query: str, candidate: labelling.Candidate) -> None:
    _save(query, candidate, st.session_state[f"fine-{candidate.item_id}"])


def _skip(query: str, candidate: labelling.Candidate) -> None:
    st.session_state.setdefault("skipped", set()).add((query, candidate.item_id))


def _undo() -> None:
    if undo_stack:
        db.delete_label(undo_stack.pop())


def _candidates(query: str, mine: dict[str, float]) -> list[labelling.Candidate]:
    from core.training.runs import resolve_model_spec

    collection = widgets.collection(name)
    key = (name, query, int(k), int(uncertain), second_model, collection.info.model_fingerprint, len(collection))
    kept = st.session_state.get("label_candidates")
    if kept is None or kept[0] != key:
        other = widgets.embedder(resolve_model_spec(second_model, db)) if second_model != "(none)" else None
        kept = (key, labelling.propose_candidates(collection, query, k=int(k), uncertain=int(uncertain),
                                                  other=other, labelled=mine))
        st.session_state["label_candidates"] = kept
    return kept[1]


def candidates_panel(query: str) -> None:
    with widgets.user_errors():
        mine = {label.item_key: label.score for label in db.labels(name)
                if label.query == query and label.annotator == (annotator or "anonymous")}
        candidates = _candidates(query, mine)
        skipped: set[tuple[str, str]] = st.session_state.setdefault("skipped", set())
        for candidate in candidates:
            if (query, candidate.item_id) in skipped:
                continue
            with st.container(border=True):
                text_col, score_col = st.columns([3, 2])
                text_col.markdown(f"**{candidate.text or candidate.item_id}**")
                note = f"id {candidate.item_id} · rank {candidate.rank} · {candidate.reason}"
                if candidate.item_id in mine:
                    note += f" · your label: {mine[candidate.item_id]:g}"
                text_col.caption(note)
                text_col.caption(f"Why shown: {candidate.explanation}.")
                buttons = score_col.columns(5)
                chosen = mine.get(candidate.item_id)
                for column, value in zip(buttons[:3], (0.0, 0.5, 1.0), strict=True):
                    picked = chosen is not None and labelling.bucket(chosen) == value
                    column.button(f"{value:g}", key=f"score-{candidate.item_id}-{value}",
                                  help=f"your label: {chosen:g}" if picked else f"label {value:g}",
                                  type="primary" if picked else "secondary",
                                  on_click=_save, args=(query, candidate, value))
                buttons[3].button("Skip", key=f"skip-{candidate.item_id}", on_click=_skip, args=(query, candidate))
                score_col.slider("finer score", 0.0, 1.0, 0.5, 0.05, key=f"fine-{candidate.item_id}",
                                 label_visibility="collapsed")
                buttons[4].button("Save", key=f"save-{candidate.item_id}", help="save the slider's score",
                                  on_click=_save_fine, args=(query, candidate))
    if undo_stack:
        st.button("Undo the last label", key="label_undo", on_click=_undo)


if query:
    candidates_panel(query)

# -- histogram and agreement ----------------------------------------------------------------------
if labels:
    st.subheader("Scores so far")
    st.altair_chart(alt.Chart(pd.DataFrame(progress["histogram"])).mark_bar().encode(
        x=alt.X("bin:N", title="score", sort=None), y=alt.Y("count:Q", title="pairs")), width="stretch")
    agreement = labelling.annotator_agreement(labels)
    if agreement["pairs"]:
        st.subheader("Agreement between annotators")
        st.dataframe(pd.DataFrame(agreement["pairs"]), hide_index=True, width="stretch")
        if agreement["disagreements"]:
            st.caption("Pairs they disagree on")
            st.dataframe(pd.DataFrame(agreement["disagreements"]), hide_index=True, width="stretch")

# -- import / export ------------------------------------------------------------------------------
st.subheader("Import and export")
left, right = st.columns(2)
with left, widgets.user_errors():
    from core.data.importing import keep_upload, table_columns

    query_file = st.file_uploader("Query list (CSV/JSONL/Parquet with a 'query' column)", key="query_upload")
    if query_file is not None and st.button("Queue these queries", key="queue_queries"):
        path = keep_upload(query_file.name, query_file.getvalue(), folder=workspace.uploads_dir, check=table_columns)
        columns = table_columns(path)
        if "query" not in columns:
            st.error(f"{query_file.name}: no column 'query' (columns are: {', '.join(columns)})")
        else:
            from core.data.formats import read_table

            added = db.add_label_queries(name, read_table(path)["query"].astype(str), source=query_file.name)
            st.success(f"queued {added} new queries")
    label_file = st.file_uploader("Existing labels (query, item_id, score[, annotator])", key="label_upload")
    if label_file is not None and st.button("Import labels", key="import_labels"):
        path = keep_upload(label_file.name, label_file.getvalue(), folder=workspace.uploads_dir, check=table_columns)
        rows = labelling.read_labels(path, collection=name, default_annotator=annotator or "imported")
        db.add_labels(rows)
        st.success(f"imported {len(rows)} labels")
with right:
    if labels:
        format_names = {"csv": "CSV", "jsonl": "JSONL", "hf": "Hugging Face dataset folder"}
        file_format = st.selectbox("Export as", list(labelling.EXPORT_FORMATS), key="export_format",
                                   format_func=format_names.get)
        if st.button("Export", key="export_labels"):
            with widgets.user_errors():
                suffix = {"csv": ".csv", "jsonl": ".jsonl", "hf": ""}[file_format]
                target = labelling.export_labels(labels, workspace.reports_dir / f"labels-{name}{suffix}", file_format)
                st.success(f"written: {target}")
                if target.is_file():
                    st.download_button("Download", Path(target).read_bytes(), file_name=target.name,
                                       key="download_labels")
