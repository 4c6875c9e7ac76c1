"""Compare: models and runs on the same queries (per dimension, paired intervals, per-query wins and
losses, the queries the tuned model lost), LLM bench results, and embedder comparisons."""

from __future__ import annotations

import json
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from core.errors import EmbtuneError
from core.evaluation import load_retrieval_set, run_evaluation, save_report, saved_reports
from core.evaluation.reports import training_overlaps
from webapp import widgets

st.title("Compare")
workspace, db = widgets.workspace_and_db()
VERDICT_COLOURS = {"better": "background-color: #c8efd0", "worse": "background-color: #f8c9c9"}

# -- evaluate ---------------------------------------------------------------------------------------
from core.training.runs import WITH_MODEL, effective_status, gate_of  # noqa: E402
from storage.runs import RunStore  # noqa: E402

RUN_VS_BASE, ON_DATA = "A run against its base, on the run's own test split", "Models on a data set"
judged = [run for run in RunStore(db).list() if effective_status(run) in WITH_MODEL and run.model_path
          and (run.splits or {}).get("test_set")]


def _evaluate(data: str, models: list[str], dimensions: list[int] | None, exclude: bool) -> None:
    with st.spinner(f"evaluating {len(models)} model(s) on {data}…"):
        report = run_evaluation(data, models, dimensions=dimensions, db=db, regressions_limit=10,
                                exclude_training_queries=exclude)
    target = save_report(report, workspace.reports_dir)
    st.session_state["compare_report"] = target.name
    st.success(f"saved {target.name}")


st.header("Evaluate")
with st.container(border=True):
    mode = st.radio("What to compare", [RUN_VS_BASE, ON_DATA] if judged else [ON_DATA], horizontal=True,
                    key="compare_mode")
    if mode == RUN_VS_BASE:
        run = next(r for r in judged if r.name == st.selectbox("Run", [r.name for r in judged],
                                                               key="compare_default_run"))
        base, dims = str(run.config.get("model") or "default"), list(run.config.get("matryoshka_dims") or [])
        st.caption(f"`{base}` (the base this run started from) against `run:{run.name}`, on the "
                   f"{(gate_of(run).queries if gate_of(run) else 'held-out')} test queries the gate judged it on — "
                   "none of them trained on" + (f"; dimensions {', '.join(map(str, dims))}" if dims else ""))
        if st.button("Evaluate", type="primary", key="compare_run_vs_base"):
            with widgets.user_errors():
                _evaluate(f"run:{run.name}", [base, f"run:{run.name}"], dims or None, False)
    else:
        data_kind = st.radio("Data", ["Bundled catalogue", "Bundled general set", "A folder or pairs file"],
                             horizontal=True, key="compare_data_kind")
        data = {"Bundled catalogue": "bundled:catalogue", "Bundled general set": "bundled:general"}.get(data_kind)
        if data is None:
            data = st.text_input("Folder with corpus/queries/qrels CSVs, or a pairs file", key="compare_data").strip()
        choices = widgets.model_choices()
        models = st.multiselect("Models (the first is the baseline)", choices, default=choices[:1],
                                key="compare_models")
        extra = st.text_input("More models (comma-separated specs or folders)", key="compare_extra")
        models += [m.strip() for m in extra.split(",") if m.strip()]
        dims = st.text_input("Dimensions (empty: the full size)", placeholder="384,256,128,64", key="compare_dims")
        exclude = False
        with widgets.user_errors():
            overlaps = training_overlaps(load_retrieval_set(data), models, db) if data and models else []
            for overlap in overlaps:
                st.warning(f"{overlap['queries']} of these queries are ones {overlap['model']} trained on: on them "
                           "it measures memory, not search.")
            if overlaps:
                exclude = st.checkbox("Leave out the queries the runs trained on (for every model)", value=True,
                                      key="compare_exclude")
        if st.button("Evaluate", type="primary", key="compare_run", disabled=not data or not models):
            with widgets.user_errors():
                try:
                    dimensions = [int(part) for part in dims.split(",") if part.strip()] or None
                except ValueError:
                    raise EmbtuneError(f"dimensions {dims!r}: whole numbers separated by commas") from None
                _evaluate(data, models, dimensions, exclude)

# -- a saved report -------------------------------------------------------------------------------
reports = saved_reports(workspace.reports_dir)
if reports:
    st.header("Saved evaluations")
    names = [p.name for p in reports]
    remembered = st.session_state.get("compare_report")
    chosen = st.selectbox("Report", names, index=names.index(remembered) if remembered in names else 0,
                          key="compare_report_pick")
    report = json.loads((workspace.reports_dir / chosen).read_text(encoding="utf-8"))
    st.caption(f"data: {report['data']} · {report.get('queries', '?')} queries · models: "
               f"{', '.join(report.get('models', []))}")
    for warning in report.get("warnings", []):
        st.warning(warning)
    judged = report.get("judged_run") or {}
    gate = judged.get("gate")
    if gate and gate.get("before") is not None:
        dimension, metric = int(gate["metric"].split("_")[1]), gate["metric"].split("_", 2)[2]
        pair = next((c for comparisons in report["comparisons"].values() for c in comparisons
                     if c["dimension"] == dimension and c["metric"] == metric), None)
        if pair is not None:
            st.markdown(f"**{gate['metric']}** on run {judged['run']}'s test split: {pair['mean_a']:.4f} → "
                        f"{pair['mean_b']:.4f} here · the gate measured {gate['before']:.4f} → {gate['after']:.4f} "
                        "when the run ended")
    rows = [{"model": r["model_id"], "dim": int(name.split("_")[1]), "metric": name.split("_", 2)[2], "value": value}
            for r in report["results"] for name, value in r["metrics"].items()]
    metrics = pd.DataFrame(rows)
    wide = metrics.pivot_table(index=["model", "dim"], columns="metric", values="value").reset_index()
    st.dataframe(wide.sort_values(["model", "dim"], ascending=[True, False]), hide_index=True,
                 width="stretch")
    ndcg = metrics[metrics["metric"] == "ndcg@10"]
    tooltip = ["model", "dim", alt.Tooltip("value:Q", format=".4f")]
    if ndcg["dim"].nunique() > 1:
        st.altair_chart(alt.Chart(ndcg).mark_line(point=True).encode(
            x=alt.X("dim:Q", title="dimension", axis=alt.Axis(format="d")),
            y=alt.Y("value:Q", title="NDCG@10", scale=alt.Scale(zero=False)), color="model:N",
            tooltip=tooltip).properties(title="NDCG@10 against dimension"), width="stretch")
    else:  # one dimension: one bar per model, not one point per line
        st.altair_chart(alt.Chart(ndcg).mark_bar().encode(
            x=alt.X("model:N", title=None, sort=None), y=alt.Y("value:Q", title="NDCG@10"), color="model:N",
            tooltip=tooltip).properties(title=f"NDCG@10 at {int(ndcg['dim'].iloc[0])} dimensions"), width="stretch")
    for key, comparisons in report["comparisons"].items():
        st.subheader(key)
        frame = pd.DataFrame(comparisons)
        shown = frame[["dimension", "metric", "mean_a", "mean_b", "delta", "ci_low", "ci_high", "p_value", "wins",
                       "ties", "losses", "verdict"]].sort_values(["metric", "dimension"], ascending=[True, False])
        st.dataframe(shown.style.apply(lambda row: [VERDICT_COLOURS.get(row["verdict"], "")] * len(row), axis=1)
                     .format({c: "{:+.4f}" for c in ("delta", "ci_low", "ci_high")} | {
                         c: "{:.4f}" for c in ("mean_a", "mean_b", "p_value")}), hide_index=True,
                     width="stretch")
        outcome = frame[frame["metric"] == "ndcg@10"].melt(
            id_vars=["dimension"], value_vars=["wins", "ties", "losses"], var_name="outcome", value_name="queries")
        st.altair_chart(alt.Chart(outcome).mark_bar().encode(
            x=alt.X("dimension:O", sort="descending"),
            y=alt.Y("queries:Q", stack="normalize", title="share of queries"),
            color=alt.Color("outcome:N", scale=alt.Scale(domain=["wins", "ties", "losses"],
                                                          range=["#3a9d5d", "#bbbbbb", "#d9534f"])),
            tooltip=["dimension", "outcome", "queries"]).properties(title="Per-query NDCG@10: win / tie / loss"),
            width="stretch")
    if report.get("regressions"):
        st.subheader("Queries the last model lost on")
        for regression in report["regressions"]:
            with st.container(border=True):
                st.markdown(f"**{regression['query']}** — NDCG@10 {regression['value_a']:.3f} → "
                            f"{regression['value_b']:.3f}")
                moves = ", ".join(f"{(regression.get('item_texts') or {}).get(item, item)}: {a or '–'} → {b or '–'}"
                                  for item, (a, b) in regression["relevant_moves"].items())
                st.caption(f"relevant items' ranks (baseline → last model): {moves}")
                named = regression.get("item_texts") or {}
                left, right = st.columns(2)
                for column, side, label in ((left, "top_a", "baseline"), (right, "top_b", "last model")):
                    column.caption(label)
                    column.dataframe(pd.DataFrame([{"item": named.get(item, item), "id": item, "score": score}
                                                   for item, score in regression[side]]), hide_index=True,
                                     width="stretch")

# -- training runs: their own before/after and forgetting check ------------------------------------

done = [run for run in RunStore(db).list() if effective_status(run) in WITH_MODEL and run.before_after]
if done:
    st.header("Training runs")
    run = next(r for r in done if r.name == st.selectbox("Run", [r.name for r in done], key="compare_run_pick"))
    widgets.gate_verdict(gate_of(run))
    if run.before_after.get("table"):
        st.markdown(run.before_after["table"])
    if (run.before_after.get("prefix_axes") or {}).get("reason"):
        st.caption(run.before_after["prefix_axes"]["reason"])
    forgetting = run.before_after.get("forgetting") or {}
    if forgetting:
        st.metric(f"Forgetting check ({forgetting['data']}) NDCG@10", f"{forgetting['ndcg@10_after']:.4f}",
                  f"{forgetting['delta'] * 100:+.2f} points", delta_color="normal")
    for warning in run.before_after.get("warnings") or []:
        st.warning(warning)

# -- LLM bench and embedder comparisons -----------------------------------------------------------
st.header("LLM bench")
llm_path = st.text_input("Results JSON of `embtune llm bench`", key="compare_llm_path").strip()
if llm_path:
    with widgets.user_errors():
        from core.llmbench.report import category_rows, load_results, recommendation, top_changes

        results = load_results(Path(llm_path).expanduser())
        adapters = list(results["metadata"]["adapters"])
        frame = pd.DataFrame(category_rows(results))
        base = alt.Chart(frame)
        bars = base.mark_bar().encode(x=alt.X("variant:N", title=None), y=alt.Y(
            "value:Q", title="domain relevance"), color="variant:N", tooltip=["category", "variant", "value"])
        errors = base.mark_errorbar().encode(x="variant:N", y="low:Q", y2="high:Q")
        st.altair_chart(alt.layer(bars, errors).facet(column=alt.Column("category:N", title=None)))
        st.caption("Error bars: 95 % paired-bootstrap interval of the adapter's score (base + Δ interval).")
        for adapter in adapters:
            st.info(f"{adapter}: " + recommendation(results, adapter))
            gained, lost = top_changes(results, adapter)
            gains = pd.DataFrame([(d, r["category"], r["prompt"]) for d, r in gained],
                                 columns=["Δ", "category", "prompt"])
            losses = pd.DataFrame([(d, r["category"], r["prompt"]) for d, r in lost],
                                  columns=["Δ", "category", "prompt"])
            left, right = st.columns(2)
            left.caption("Top gains")
            left.dataframe(gains, hide_index=True, width="stretch")
            right.caption("Top regressions")
            right.dataframe(losses, hide_index=True, width="stretch")

st.header("Embedder comparison")
embedders_path = st.text_input("JSON of `embtune compare-embedders --json`", key="compare_embedders_path").strip()
if embedders_path:
    with widgets.user_errors():
        from core.data.formats import read_json_file

        comparison = read_json_file(Path(embedders_path).expanduser())
        if "models" not in comparison:
            st.error(f"{embedders_path}: not a compare-embedders result (no 'models' list)")
        else:
            st.dataframe(pd.DataFrame(comparison["models"]), hide_index=True, width="stretch")
            st.info(comparison.get("verdict", ""))
