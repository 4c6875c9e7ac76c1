"""Data: workspace status, collections, import (check first, then confirm), search."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from webapp import widgets

st.title("Data")
workspace, db = widgets.workspace_and_db()


@st.cache_data(ttl=60, show_spinner="Checking the set-up…")
def _status_lines(root: str, url: str) -> list[dict[str, str]]:
    from core.setup_check import run_checks

    return [check.to_dict() | {"line": check.line()} for check in run_checks(Path(root), url, load_model=False)]


with st.expander("Workspace status", expanded=False):
    st.caption(f"workspace {workspace.root}")
    for check in _status_lines(str(workspace.root), db.url):
        (st.error if check["status"] == "fail" else st.warning if check["status"] == "warn" else st.text)(
            check["line"])

# -- collections ---------------------------------------------------------------------------------
st.header("Collections")
from core.collection.named import delete_collection, describe_collections  # noqa: E402

rows = describe_collections(db)
if rows:
    st.dataframe(pd.DataFrame(rows).drop(columns=["path"]), hide_index=True, width="stretch")
    with st.expander("Delete a collection"):
        doomed = st.selectbox("Collection to delete", [r["name"] for r in rows], key="delete_name")
        sure = st.checkbox(f"Yes, delete {doomed!r} with its index", key="delete_sure")
        if st.button("Delete", type="secondary", disabled=not sure, key="delete_button"):
            with widgets.user_errors():
                delete_collection(doomed, workspace=workspace, db=db)
                st.success(f"deleted {doomed}")
                st.rerun()
else:
    st.info("No collections yet: import a CSV, JSONL or Parquet file below.")

# -- import ---------------------------------------------------------------------------------------
st.header("Import")
from core.data.importing import (  # noqa: E402
    DEFAULT_UPLOAD_LIMIT_MB,
    IMAGE_SUFFIXES,
    keep_upload,
    preview_table,
    table_columns,
)
from core.errors import EmbtuneError  # noqa: E402

limit_mb = float(st.session_state.get("upload_limit_mb", DEFAULT_UPLOAD_LIMIT_MB))
source = st.radio("Source", ["Upload a file", "A file on this machine"], horizontal=True, key="import_source")
path: Path | None = None
with widgets.user_errors():
    if source == "Upload a file":
        upload = st.file_uploader(f"CSV, JSONL or Parquet (up to {limit_mb:g} MB)", key="import_upload")
        if upload is not None:
            path = keep_upload(upload.name, upload.getvalue(), folder=workspace.uploads_dir, limit_mb=limit_mb,
                               check=table_columns)
    else:
        typed = st.text_input("Path", key="import_path").strip()
        if typed:
            path = Path(typed).expanduser()
    if path is not None:
        columns = table_columns(path)
        left, middle, right = st.columns(3)
        text_column = left.selectbox("Text column (embedded)", columns,
                                     index=columns.index("name") if "name" in columns else
                                     columns.index("text") if "text" in columns else 0, key="import_text_column")
        id_column = middle.selectbox("Id column", ["(row numbers)", *columns],
                                     index=1 + columns.index("id") if "id" in columns else 0, key="import_id_column")
        name = right.text_input("Collection name", value=Path(path).stem.split("-")[0], key="import_name").strip()
        model = left.text_input("Model", value="default", key="import_model").strip() or "default"
        index_kind = middle.text_input("Index kind", value="auto", key="import_index_kind").strip() or "auto"
        preview = preview_table(path, text_column=text_column,
                                id_column=None if id_column == "(row numbers)" else id_column)
        st.caption(f"{preview.rows} rows, columns: {', '.join(preview.columns)}")
        st.dataframe(preview.head, hide_index=True, width="stretch")
        existing = db.get_collection(name) if name else None
        action = None
        if preview.problems:
            st.error(f"{len(preview.problems)} problem(s): fix the file, nothing was written")
            st.dataframe(pd.DataFrame(preview.problems), hide_index=True, width="stretch")
        elif existing is None:
            if st.button(f"Import {preview.rows} rows into {name!r}", type="primary", key="import_confirm"):
                action = "replace"
        else:
            st.warning(f"A collection named {name!r} already exists ({existing.item_count} items, model "
                       f"{existing.model_spec}). Replace it, add these rows to it (embedded with its own model), "
                       "or cancel.")
            replace, append, cancel = st.columns(3)
            if replace.button(f"Replace {name!r} with these {preview.rows} rows", key="import_replace"):
                action = "replace"
            if append.button(f"Add these {preview.rows} rows to {name!r}", key="import_append"):
                action = "append"
            if cancel.button("Cancel", key="import_cancel"):
                st.info(f"Nothing was imported; {name!r} is unchanged.")
        if action is not None:
            from core.collection.named import append_file, index_file

            bar = st.progress(0.0, text="embedding…")

            def show(progress) -> None:
                if progress.fraction is not None:
                    bar.progress(progress.fraction, text=f"{progress.task}: {progress.done}/{progress.total}")

            ids = None if id_column == "(row numbers)" else id_column
            try:
                if action == "append":
                    report = append_file(path, collection=name, text_column=text_column, id_column=ids,
                                         workspace=workspace, db=db, progress=show, show_progress=False)
                else:
                    report = index_file(path, collection=name, text_column=text_column, id_column=ids, model=model,
                                        index_kind=index_kind, workspace=workspace, db=db, progress=show,
                                        show_progress=False)
            except EmbtuneError:
                bar.empty()
                raise
            bar.progress(1.0, text="done")
            if action == "append":
                st.success(f"added {report.count} items to {report.collection!r} (now "
                           f"{db.get_collection(name).item_count}) with {report.model_id} in {report.seconds:.1f} s")
            else:
                st.success(f"indexed {report.count} items into {report.collection!r} with {report.model_id} "
                           f"({report.dimension}-d, {report.index_factory}) in {report.seconds:.1f} s")

# -- search ---------------------------------------------------------------------------------------
st.header("Search")
name = widgets.pick_collection("search_collection")
if name:
    with widgets.user_errors():
        record = db.get_collection(name)
        image_collection = record is not None and record.model_spec.startswith(("clip:", "screen:"))
        left, right = st.columns([3, 1])
        query = left.text_input("Query", key="search_query", placeholder="e.g. шуруповерт акамуляторный")
        k = right.number_input("Results", min_value=1, max_value=100, value=5, key="search_k")
        picture = st.file_uploader("…or search with an image", type=[x.lstrip(".") for x in IMAGE_SUFFIXES],
                                   key="search_image") if image_collection else None
        layout = st.radio("Show as", ["Table", "Cards"], horizontal=True, key="search_layout")
        hits = []
        if picture is not None:
            from core.images import check_upload

            kept = keep_upload(picture.name, picture.getvalue(), folder=workspace.uploads_dir, limit_mb=limit_mb,
                               suffixes=IMAGE_SUFFIXES, kind="a PNG, JPEG or WebP image",
                               check=lambda path: check_upload(path, name=picture.name))
            collection = widgets.collection(name)
            hits = collection.search(collection.embedder.encode_images([kept]), int(k))
        elif query.strip():
            hits = widgets.collection(name).search(query.strip(), int(k))
        if hits:
            from core.collection.search import relative_scores, typical_score

            collection = widgets.collection(name)
            query_vector = (collection.embedder.encode_images([kept]) if picture is not None else
                            collection.embedder.encode_query([query.strip()]))[0]  # the search's own, cached
            typical = typical_score(collection.vectors, query_vector)
            bars = relative_scores([hit.score for hit in hits], typical)
            results = [{"rank": i + 1, "match": bar, "text": collection.item(hit.id).get("text"), "id": hit.id,
                        "cosine": round(hit.score, 4), **hit.metadata}
                       for i, (hit, bar) in enumerate(zip(hits, bars, strict=True))]
            st.caption(f"The bar places each result between an ordinary item of this collection for this query "
                       f"(cosine {typical:.3f}, empty bar) and the best result (full bar): this model's cosines sit "
                       "close together, so the raw cosine alone says little.")
            if layout == "Table":
                st.dataframe(pd.DataFrame(results), hide_index=True, width="stretch", column_config={
                    "match": st.column_config.ProgressColumn("match", min_value=0.0, max_value=1.0, format="percent",
                                                             help="0 %: as close as an ordinary item; 100 %: the "
                                                                  "best result"),
                    "cosine": st.column_config.NumberColumn("cosine", format="%.4f", help="the raw cosine")})
            else:
                for result in results:
                    with st.container(border=True):
                        st.markdown(f"**{result['rank']}. {result['text'] or result['id']}**")
                        st.progress(result["match"], text=f"match {result['match']:.0%} · cosine "
                                                          f"{result['cosine']:.3f}")
                        extra = {k: v for k, v in result.items() if k not in ("rank", "id", "match", "cosine",
                                                                               "text")}
                        st.caption(f"id {result['id']}" + "".join(f" · {k}: {v}" for k, v in extra.items()))
