"""Train: configure a fine-tune (the data format's recipe as defaults), see what it will cost, launch it in its own
process, follow it live (only the progress area refreshes), cancel it, and read the gate's verdict.

The page never lets a run start that cannot train: a source whose queries cannot fill the split says how many
more are needed, and Launch stays disabled with the reason."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from core.data import training_data
from core.progress import format_duration
from core.training import cost, launcher
from core.training.config import TrainingConfig
from core.training.runs import (
    ACTIVE_STATES,
    CANCELLED,
    CANCELLING,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    effective_status,
    gate_of,
    refresh_runs,
    run_duration_s,
    run_summary,
    state_label,
)
from webapp import charts, widgets

st.title("Train")
workspace, db = widgets.workspace_and_db()

# -- configure ------------------------------------------------------------------------------------
st.header("New run")
names = widgets.collection_names()
LABELS, FILE, BUNDLED = "Labels in storage", "A file on this machine", "Bundled catalogue"
SOURCES = [LABELS, FILE, BUNDLED]

split_left, split_right, _ = st.columns(3)
validation = split_left.number_input("Validation fraction", 0.0, 0.9, launcher.DEFAULT_VALIDATION, 0.05,
                                     key="train_validation", help="Share of queries (or groups) that pick the best "
                                     "epoch and the principal axes")
test = split_right.number_input("Test fraction", 0.0, 0.9, launcher.DEFAULT_TEST, 0.05, key="train_test",
                                help="Share of queries held out for the gate's before/after: never trained on")


def inspect(data: str) -> dict:
    return launcher.inspect_training_data(data, db=db, validation=float(validation), test=float(test))


@st.cache_data(max_entries=16, show_spinner="Reading the training data…")
def inspect_training_file(data: str, version: tuple[int, int, int], validation: float, test: float) -> dict:
    """Read and checked once per version of the file: every widget change reruns this page, and a file of a
    million pairs takes seconds to read. Errors are not cached, so a fixed file is read again."""
    return launcher.inspect_training_data(data, db=None, validation=validation, test=test)


@st.cache_data(max_entries=16, show_spinner=False)
def plan_file_steps(config_json: str, version: tuple[int, int, int]) -> cost.StepPlan:
    """The step plan of a config over a file, once per config and version of the file (it reads the file)."""
    return cost.plan_steps(TrainingConfig.from_dict(json.loads(config_json)))


def labels_state(collection_name: str) -> tuple[dict | None, str | None]:
    """What the labels of a collection hold, or why they cannot train yet (in pairs and queries to add)."""
    shortfall = launcher.labels_shortfall(collection_name, db, validation=float(validation), test=float(test))
    if shortfall:
        return None, shortfall
    try:
        return inspect(f"labels:{collection_name}"), None
    except Exception as exc:  # pairs whose items are gone, or no labels: shown as the reason
        return None, str(exc)


def use_bundled() -> None:
    st.session_state["train_source"] = BUNDLED


first_labels, first_labels_problem = labels_state(names[0]) if names else (None, "no collections yet")
if "train_source" not in st.session_state:  # open on a source that can train
    can_train = first_labels is not None and not first_labels["split_problem"]
    st.session_state["train_source"] = LABELS if can_train else BUNDLED
    if names and not can_train and db.labels(names[0]):
        st.session_state["train_opened_on_bundled"] = names[0]
source_kind = st.radio("Data", SOURCES, horizontal=True, key="train_source")
why_bundled = st.session_state.get("train_opened_on_bundled")
if source_kind == BUNDLED and why_bundled:
    found_labels, problem = labels_state(why_bundled)
    reason = found_labels["split_problem"] if found_labels else problem
    if reason:
        st.info(f"Opened on the bundled catalogue: the labels of {why_bundled!r} cannot train yet — {reason}. "
                "Label more queries on the Label page, or change the fractions above.")

collection = None
data = None
if source_kind == LABELS:
    if names:
        collection = st.selectbox("Collection whose labels to train on", names, key="train_collection")
        shortfall = launcher.labels_shortfall(collection, db, validation=float(validation), test=float(test))
        if shortfall:
            st.error(f"These labels cannot train yet: {shortfall}.")
            st.button("Train on the bundled catalogue instead", key="train_use_bundled", on_click=use_bundled)
            st.button("Launch", type="primary", key="train_launch", disabled=True, help=f"Launch is off: {shortfall}")
            st.caption(f"Launch is off: {shortfall}.")
        else:
            data = f"labels:{collection}"
    else:
        st.info("No collections yet: import data and label pairs first.")
elif source_kind == FILE:
    data = st.text_input("Training file or dataset folder", key="train_file").strip() or None
    collection = st.selectbox("Trained for collection", ["(none)", *names], key="train_for") if names else None
    collection = None if collection == "(none)" else collection
else:
    data = "bundled:catalogue"
    collection = "catalogue" if "catalogue" in names else None

found = None
if data:
    with widgets.user_errors():
        version = training_data.source_version(data)
        found = inspect(data) if version is None else inspect_training_file(data, version, float(validation),
                                                                             float(test))
        st.caption(f"{found['rows']} usable rows of {found['data_format']} data on {found['groups']} "
                   f"{found['group_unit']} · " + " · ".join(f"{k}: {v}" for k, v in found["counts"].items()))
        for warning in found["warnings"]:
            st.warning(warning)
        if found["split_problem"]:
            st.error(f"This data cannot train yet: {found['split_problem']}.")
            if source_kind != BUNDLED:
                st.button("Train on the bundled catalogue instead", key="train_use_bundled", on_click=use_bundled)

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
                                validation_fraction=float(validation), test_fraction=float(test),
                                collection=collection, run_name=run_name)
        with st.expander("TrainingConfig JSON"):
            st.code(json.dumps(config.to_dict(), indent=2, ensure_ascii=False), language="json")
        blocked = found["split_problem"]
        if not blocked:
            plan = cost.plan_steps(config, db=db) if version is None else plan_file_steps(
                json.dumps(config.to_dict(), sort_keys=True), version)
            speed = cost.speed_from_runs(config, refresh_runs(db))
            if speed is None:
                with st.spinner(f"Measuring this machine's speed for {base_model} (a few training steps, once)…"):
                    speed = cost.probe_speed(config, db=db, cache_file=workspace.runs_dir / "speed.json")
            extra = (f" plus about {format_duration(speed.overhead_s)} of loading and evaluation"
                     if speed.overhead_s is not None else " plus loading and the evaluation after training")
            st.info(f"**{plan.steps} steps** ({plan.batches_per_epoch} per epoch) · about "
                    f"**{format_duration(plan.steps * speed.seconds_per_step)}** of training on this machine"
                    f"{extra} — measured from {speed.source}: {speed.seconds_per_step:.2f} s a step.")
        if launcher.standby_enabled() and not blocked:
            launcher.prepare_worker(db=db, workspace=workspace)  # imports done before the click
        if st.button("Launch", type="primary", key="train_launch", disabled=bool(blocked),
                     help=f"Launch is off: {blocked}" if blocked else None):
            launched = launcher.launch_training(config, db=db, workspace=workspace)
            st.session_state.pop("train_auto_name", None)
            st.session_state["train_run_pick"] = launched  # the new run is the one in view
            st.success(f"launched {launched}")
        if blocked:
            st.caption(f"Launch is off: {blocked}.")

# -- runs -----------------------------------------------------------------------------------------
st.header("Runs")


def status_text(run) -> str:
    """The status in a word or two (the metric is narrow): the phase while running, else the state without its
    step or reason, which the message under the metrics gives in full."""
    if run.status == RUNNING:
        return (run.progress or {}).get("phase", "running")
    if run.status == CANCELLING:
        return "cancelling…"
    return effective_status(run)


@st.fragment(run_every=2.0)
def runs_panel() -> None:
    runs = refresh_runs(db)
    if not runs:
        st.info("No runs yet.")
        return
    rows = [run_summary(run) for run in runs]
    st.dataframe(pd.DataFrame([{
        "run": row["name"], "state": row["state"], "collection": row["collection"],
        "step": f"{row['step']}/{row['total_steps']}", "duration": format_duration(row["duration_s"]),
        "verdict": row["verdict"] or "", "Δ primary": row["delta"],
    } for row in rows]), hide_index=True, width="stretch")
    names = [run.name for run in runs]
    if st.session_state.get("train_run_pick") not in names:
        st.session_state["train_run_pick"] = names[0]
    chosen = st.selectbox("Run", names, key="train_run_pick")
    run = next(r for r in runs if r.name == chosen)
    progress = run.progress or {}
    cols = st.columns(5)
    cols[0].metric("Status", status_text(run))
    cols[1].metric("Step", f"{progress.get('step', 0)} / {progress.get('total_steps', 0)}")
    cols[2].metric("Epoch", f"{progress.get('epoch', 0.0):.2f}")
    cols[3].metric("Duration", format_duration(run_duration_s(run)))
    cols[4].metric("ETA", format_duration(progress.get("eta_s")) if run.status == RUNNING else "–")
    if run.status == CANCELLING:
        st.warning(state_label(run))
    gate = gate_of(run)
    if gate is not None:
        widgets.gate_verdict(gate)
    elif run.status in (FAILED, INTERRUPTED):
        st.error(state_label(run))
    elif run.status == CANCELLED:
        st.warning(f"{state_label(run)}: its last checkpoint is kept for --resume.")
    chart = charts.training_chart(progress, run.epoch_metrics or [])
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    elif run.status in ACTIVE_STATES and progress.get("log_every"):
        st.caption(f"The loss is logged every {progress['log_every']} steps: its first point appears at step "
                   f"{progress['log_every']}.")
    if run.epoch_metrics:
        st.caption("Evaluation per epoch")
        st.dataframe(pd.DataFrame(run.epoch_metrics), hide_index=True, width="stretch")
    if (run.before_after or {}).get("table"):
        st.caption("Before → after on the held-out test split")
        st.markdown(run.before_after["table"])
    if run.status in (QUEUED, RUNNING) and st.button("Cancel this run", key=f"cancel-{run.name}"):
        with widgets.user_errors():
            launcher.cancel_training(run.name, db)
            st.rerun(scope="fragment")


runs_panel()
