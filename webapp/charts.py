"""Charts the studio draws from stored run data (altair): built from plain dicts so a test can read the very
data a page plots."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import altair as alt
import pandas as pd

_VALIDATION_NDCG = re.compile(r"^eval_dim_(\d+)_ndcg@10$")


def loss_points(progress: Mapping[str, Any]) -> pd.DataFrame:
    """One row per logged training loss, at the step it was logged (nothing is drawn between logs)."""
    return pd.DataFrame(progress.get("history") or [], columns=["step", "epoch", "loss"])


def validation_points(epoch_metrics: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, str | None]:
    """NDCG@10 on the validation split at each evaluation, at the smallest trained dimension (the gate's
    metric by default); the metric's name is returned beside the rows."""
    dims = sorted({int(match.group(1)) for entry in epoch_metrics for key in entry
                   if (match := _VALIDATION_NDCG.match(key))})
    if not dims:
        return pd.DataFrame(columns=["step", "value"]), None
    metric = f"eval_dim_{dims[0]}_ndcg@10"
    rows = [{"step": int(entry.get("step", 0)), "value": float(entry[metric])} for entry in epoch_metrics
            if metric in entry]
    return pd.DataFrame(rows), metric.removeprefix("eval_")


def training_chart(progress: Mapping[str, Any], epoch_metrics: Sequence[Mapping[str, Any]]) -> alt.HConcatChart | None:
    """The loss at its logged steps and, beside it, validation NDCG@10 per evaluation; None before the first log."""
    losses = loss_points(progress)
    if losses.empty:
        return None
    loss_chart = alt.Chart(losses, title="training loss (at each logged step)").mark_line(point=True).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
        tooltip=["step", alt.Tooltip("epoch:Q", format=".2f"), alt.Tooltip("loss:Q", format=".4f")])
    validation, metric = validation_points(epoch_metrics)
    if metric is None:
        return alt.hconcat(loss_chart)
    validation_chart = alt.Chart(validation, title=f"validation {metric} (per evaluation)").mark_line(
        point=True, color="#3a9d5d").encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        tooltip=["step", alt.Tooltip("value:Q", format=".4f")])
    return alt.hconcat(loss_chart, validation_chart)


def chart_rows(chart: alt.TopLevelMixin, title_start: str) -> list[dict[str, Any]]:
    """The rows the sub-chart whose title starts with ``title_start`` plots (what a reader sees as points)."""
    spec = chart.to_dict()
    datasets = spec.get("datasets", {})
    for part in spec.get("hconcat", [spec]):
        title = part.get("title")
        title = title.get("text") if isinstance(title, dict) else title
        if str(title or "").startswith(title_start):
            return list(datasets[part["data"]["name"]])
    return []


# Tableau's ten colours; past ten categories the shape changes too, so up to fifty stay distinct.
CATEGORY_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                    "#9c755f", "#bab0ac"]
CATEGORY_SHAPES = ["circle", "square", "triangle-up", "diamond", "cross"]


def category_style(values: Sequence[Any]) -> dict[str, tuple[str, str]]:
    """Category → (colour, shape): ten colours on circles, then the same colours on squares, triangles…"""
    domain = sorted({str(v) for v in values})
    return {value: (CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)],
                    CATEGORY_SHAPES[(i // len(CATEGORY_COLOURS)) % len(CATEGORY_SHAPES)])
            for i, value in enumerate(domain)}


def category_encoding(field: str, values: Sequence[Any]) -> dict[str, Any]:
    """Colour (and, past ten categories, shape) encodings for ``field``, with one shared legend."""
    style = category_style(values)
    domain = list(style)
    encoding: dict[str, Any] = {"color": alt.Color(f"{field}:N", title=field, scale=alt.Scale(
        domain=domain, range=[colour for colour, _ in style.values()]))}
    if len(domain) > len(CATEGORY_COLOURS):
        encoding["shape"] = alt.Shape(f"{field}:N", title=field, scale=alt.Scale(
            domain=domain, range=[shape for _, shape in style.values()]))
    return encoding
