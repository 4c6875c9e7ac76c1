"""Train: configure a fine-tune (the data format's recipe as defaults), launch it in its own process,
follow it live (only the progress area refreshes), cancel it, and read the gate's verdict."""

from __future__ import annotations

import json

import altair as alt
import pandas as pd
import streamlit as st

from core.data import training_data
from core.training import launcher
from core.training.config import TrainingConfig
from core.training.runs import ACTIVE_STATES, gate_of, refresh_runs, run_duration_s, run_summary
from webapp import widgets

st.title("Train")
workspace, db = widgets.workspace_and_db()

# -- configure ------------------------------------------------------------------------------------
st.header("New run")
names = widgets.collection_names()
SOURCES = ["Labels in storage", "A file on this machine", "Bundled catalogue"]


def labels_can_train(collection_names: list[str]) -> bool:
    """Whether the first collection's labels are enough to train on (else the page opens on the bundled data)."""
    if not collection_names:
        return False
    try:
        launcher.inspect_training_data(f"labels:{collection_names[0]}", db=db)
    except Exception:  # too few labels, or none: not the source to open on
        return False
    return True


if "train_source" not in st.session_state:
    st.session_state["train_source"] = SOURCES[0] if labels_can_train(names) else SOURCES[2]
source_kind = st.radio("Data", SOURCES, horizontal=True, key="train_source")
collection = None
data = None
if source_kind == "Labels in storage":
    if names:
        collection = st.selectbox("Collection whose labels to train on", names, key="train_collection")
        data = f"labels:{collection}"
    else:
        st.info("No collections yet: import data and label pairs first.")
elif source_kind == "A file on this machine":
    data = st.text_input("Training file or dataset folder", key="train_file").strip() or None
    collection = st.selectbox("Trained for collection", ["(none)", *names], key="train_for") if names else None
    collection = None if collection == "(none)" else collection
else:
    data = "bundled:catalogue"
    collection = "catalogue" if "catalogue" in names else None


@st.cache_data(max_entries=16, show_spinner="Reading the training data…")
def inspect_training_file(data: str, version: tuple[int, int, int]) -> dict:
    """Read and checked once per version of the file: every widget change reruns this page, and a file of a
    million pairs takes seconds to read. Errors are not cached, so a fixed file is read again."""
    return launcher.inspect_training_data(data, db=None)


found = None
if data:
    with widgets.user_errors():
        version = training_data.source_version(data)
        found = (launcher.inspect_training_data(data, db=db) if version is None
                 else inspect_training_file(data, version))
        st.caption(f"{found['rows']} usable rows of {found['data_format']} data · "
                   + " · ".join(f"{k}: {v}" for k, v in found["counts"].items()))
        for warning in found["warnings"]:
            st.warning(warning)

if found:
    recipe = found["recipe"]
    st.caption(f"Defaults: the measured recipe for {found['data_format']} data (docs/finetune-results.md).")
    left, middle, right = st.columns(3)
    base_model = left.text_input("Base model", value="default", key="train_model").strip() or "default"
    loss = middle.selectbox("Loss (those that fit this data)", found["losses"], key="train_loss")
    dims = right.multiselect("Matryoshka dimensions (empty: the recipe's)", [768, 512, 384, 256, 128, 64, 32],
                             default=[], key="train_dims",
                             help="Empty: the model's own dimension and 256/128/64 below it (retrieval formats). "
                                  "Only the model's dimension: no Matryoshka.")
    epochs = left.number_input("Epochs", 0.1, 100.0, float(recipe["epochs"]), 0.5, key="train_epochs")
    batch_size = middle.number_input("Batch size", 1, 1024, int(recipe["batch_size"]), key="train_batch")
    learning_rate = right.number_input("Learning rate", 1e-7, 1e-1, float(recipe["learning_rate"]), format="%.1e",
                                       key="train_lr")
    typos = left.number_input("Typo variants per query", 0, 5, int(recipe["augment_typos"]), key="train_typos")
    lora = middle.toggle("LoRA adapter", value=False, key="train_lora")
    accept_worse = right.checkbox("Accept a run the gate rejects", value=False, key="train_accept_worse",
                                  help="Recorded with the run; a rejected run is otherwise never served.")
    typed_name = left.text_input("Run name", value="", placeholder="a new name is made when empty",
                                 key="train_run_name").strip()
    axes = middle.checkbox("Principal axes for the small dimensions", value=True, key="train_axes",
                           help="After a Matryoshka run, an orthogonal layer orders the output by the domain's "
                                "principal axes (no full-width cosine changes); kept only when validation at the "
                                "smallest dimension does not fall.")
    run_name = typed_name or st.session_state.setdefault("train_auto_name", launcher.new_run_name())
    with widgets.user_errors():
        config = TrainingConfig(data=data, output_dir=str(workspace.models_dir / run_name), model=base_model,
                                loss=loss, matryoshka_dims=list(dims) or None, epochs=float(epochs),
                                batch_size=int(batch_size), learning_rate=float(learning_rate),
                                augment_typos=int(typos), lora=lora, accept_worse=accept_worse, principal_axes=axes,
                                collection=collection, run_name=run_name)
        with st.expander("TrainingConfig JSON"):
            st.code(json.dumps(config.to_dict(), indent=2, ensure_ascii=False), language="json")
        if launcher.standby_enabled():
            launcher.prepare_worker(db=db, workspace=workspace)  # imports done before the click
        if st.button("Launch", type="primary", key="train_launch"):
            launched = launcher.launch_training(config, db=db, workspace=workspace)
            st.session_state.pop("train_auto_name", None)
            st.session_state["train_selected"] = launched
            st.success(f"launched {launched}")

# -- runs -----------------------------------------------------------------------------------------
st.header("Runs")


@st.fragment(run_every=2.0)
def runs_panel() -> None:
    runs = refresh_runs(db)
    if not runs:
        st.info("No runs yet.")
        return
    rows = [run_summary(run) for run in runs]
    table = pd.DataFrame([{
        "run": row["name"], "state": row["state"], "collection": row["collection"],
        "step": f"{row['step']}/{row['total_steps']}", "duration s": round(row["duration_s"] or 0.0, 1),
        "verdict": row["verdict"] or "", "Δ primary": row["delta"],
    } for row in rows])
    st.dataframe(table, hide_index=True, width="stretch")
    names = [run.name for run in runs]
    selected = st.session_state.get("train_selected")
    chosen = st.selectbox("Run", names, index=names.index(selected) if selected in names else 0, key="train_run_pick")
    st.session_state["train_selected"] = chosen
    run = next(r for r in runs if r.name == chosen)
    progress = run.progress or {}
    cols = st.columns(5)
    cols[0].metric("Status", run.status if run.status != "running" else progress.get("phase", "running"))
    cols[1].metric("Step", f"{progress.get('step', 0)} / {progress.get('total_steps', 0)}")
    cols[2].metric("Epoch", f"{progress.get('epoch', 0.0):.2f}")
    cols[3].metric("Duration", f"{run_duration_s(run) or 0.0:.0f} s")
    eta = progress.get("eta_s")
    cols[4].metric("ETA", f"{eta:.0f} s" if eta is not None and run.status == "running" else "–")
    gate = gate_of(run)
    if gate is not None:
        widgets.gate_verdict(gate)
    elif run.status in ("failed", "interrupted", "cancelled"):
        st.error(run_summary(run)["state"])
    history = progress.get("history") or []
    if history:
        st.altair_chart(alt.Chart(pd.DataFrame(history)).mark_line(point=True).encode(
            x=alt.X("step:Q"), y=alt.Y("loss:Q", title="training loss"), tooltip=["step", "epoch", "loss"]),
            width="stretch")
    if run.epoch_metrics:
        st.caption("Evaluation per epoch")
        st.dataframe(pd.DataFrame(run.epoch_metrics), hide_index=True, width="stretch")
    if (run.before_after or {}).get("table"):
        st.caption("Before → after on the held-out test split")
        st.markdown(run.before_after["table"])
    if run.status in ACTIVE_STATES and st.button("Cancel this run", key=f"cancel-{run.name}"):
        launcher.cancel_training(run.name, db)
        st.toast(f"cancelling {run.name}")


runs_panel()
