"""Map: a collection's embedding space in 2-D (UMAP or t-SNE), a query placed on it, base vs tuned."""

from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from core.maps import MAX_MAP_POINTS, METHODS, TOOLTIP_TEXT_CHARS, compute_map, place_query
from webapp import charts, widgets

st.title("Map")
workspace, db = widgets.workspace_and_db()
name = widgets.pick_collection("map_collection")
if not name:
    st.stop()

left, middle, right = st.columns(3)
method = left.selectbox("Projection", list(METHODS), format_func=str.upper, key="map_method")
second = middle.selectbox("Side by side with", ["(nothing)", *widgets.model_choices(name)], key="map_second")
query = right.text_input("Place a query", key="map_query").strip()


@st.cache_resource(show_spinner=False, max_entries=8)
def _projection(name: str, key: tuple[str, str, str], method: str, second: str, _embedder) -> tuple:
    """The map and its table, kept in memory per collection state, method and model: a second open
    (or a rerun for another query or colour) costs no disk read and no table building."""
    emap = compute_map(widgets.collection(name), method=method, name=name, embedder=_embedder)
    rows = [{"x": x, "y": y, "id": item_id, "text": (text or "")[:TOOLTIP_TEXT_CHARS],
             **{k: str(v) for k, v in meta.items()}}
            for item_id, (x, y), text, meta in zip(emap.ids, emap.coords.tolist(), emap.texts, emap.metadata,
                                                   strict=True)]
    return emap, pd.DataFrame(rows)


def _frame(table: pd.DataFrame, placement) -> pd.DataFrame:
    neighbours = set(placement.neighbour_ids) if placement else set()
    return table.assign(neighbour=table["id"].isin(neighbours))


def _chart(frame: pd.DataFrame, title: str, colour: str | None, placement, key: str) -> list[dict]:
    box = alt.selection_interval(name="box")
    fields = [c for c in frame.columns if c not in ("x", "y", "neighbour")]
    # Projection coordinates have no meaning of their own: no axes, and no zero forced into the view.
    encoding = {"x": alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)),
                "y": alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)), "tooltip": fields,
                "opacity": alt.condition(box, alt.value(0.85), alt.value(0.2))}
    if colour:
        encoding |= charts.category_encoding(colour, frame[colour].tolist())
    points = alt.Chart(frame, title=title).mark_point(size=45, filled=True).encode(**encoding).add_params(box)
    layers = [points]
    if placement is not None:
        near = alt.Chart(frame[frame["neighbour"]]).mark_circle(size=160, fill=None, stroke="black",
                                                                  strokeWidth=2).encode(x="x:Q", y="y:Q",
                                                                                        tooltip=fields)
        star = alt.Chart(pd.DataFrame([{"x": placement.x, "y": placement.y, "query": query}])).mark_point(
            shape="diamond", size=300, filled=True, color="red").encode(x="x:Q", y="y:Q", tooltip=["query"])
        layers += [near, star]
    chart = alt.layer(*layers).properties(height=520)
    event = st.altair_chart(chart, width="stretch", on_select="rerun", selection_mode=["box"], key=key)
    selected = (event or {}).get("selection", {}).get("box") or {}
    if not selected or "x" not in selected:
        return []
    (x0, x1), (y0, y1) = selected["x"], selected["y"]
    inside = frame[(frame["x"] >= min(x0, x1)) & (frame["x"] <= max(x0, x1)) & (frame["y"] >= min(y0, y1))
                   & (frame["y"] <= max(y0, y1))]
    return inside.drop(columns=["x", "y", "neighbour"]).to_dict(orient="records")


with widgets.user_errors():
    from core.training.runs import resolve_model_spec

    collection = widgets.collection(name)
    panels = [("collection model", None)]
    if second != "(nothing)":
        panels.append((second, widgets.embedder(resolve_model_spec(second, db))))
    fields = sorted({key for item_id in collection.ids[:1000] for key in collection.item(item_id)["metadata"]})
    if len(collection) > MAX_MAP_POINTS:
        st.caption(f"{len(collection):,} items: a seeded random sample of {MAX_MAP_POINTS:,} is mapped.")
    choices = ["(none)", *fields]
    default = choices.index("category") if "category" in choices else 0  # a catalogue's own grouping
    colour = st.selectbox("Colour by", choices, index=default, key="map_colour") if fields else "(none)"
    colour = None if colour == "(none)" else colour
    columns = st.columns(len(panels))
    for (label, other), column in zip(panels, columns, strict=True):
        with column:
            with st.spinner(f"projecting with {label} (cached after the first time)…"):
                started = time.perf_counter()
                emap, table = _projection(name, widgets.collection_key(name), method, label, other)
                took = time.perf_counter() - started
            placement = None
            if query:
                encoder = other or collection.embedder
                placement = place_query(emap, encoder.encode_query([query])[0])
            title = f"{label}: {emap.method.upper()} of {len(emap.ids)} points" + (
                f" (sample of {emap.total})" if emap.sampled else "")
            for note in emap.notes:
                st.caption(note)
            fresh = not emap.from_cache and took >= emap.seconds / 2  # projected in this very run
            st.caption(("projected" if fresh else "from cache") + f" in {took:.2f} s")
            selected = _chart(_frame(table, placement), title, colour, placement, key=f"map-{label}")
            if placement is not None:
                st.caption("Nearest neighbours of the query: " + ", ".join(
                    f"{collection.item(item)['text'] or item} ({score:.2f})"
                    for item, score in zip(placement.neighbour_ids[:5], placement.scores[:5], strict=True)))
            if selected:
                st.caption(f"{len(selected)} selected")
                st.dataframe(pd.DataFrame(selected), hide_index=True, width="stretch")
