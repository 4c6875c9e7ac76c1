"""The gate every training run passes before anything serves it: better, not proven, or rejected.

A fine-tune can make search worse (a learning rate too high, the wrong loss for the data) or buy
its domain gain with general ability. The run already measures both on data it never trained on —
the held-out split (paired, per query) and the general set — so the gate only turns those
measurements into the run's outcome, with the figures that justify it:

* the primary metric's paired interval is above zero → ``finished`` (verdict *better*);
* it straddles zero → ``not proven`` (verdict *not proven*);
* it is below zero, or the point estimate falls more than ``max_drop``, or the general set loses
  more than the forgetting threshold → ``rejected``, with the reason.

``accept_worse`` keeps the measurements and the verdict but lets a rejected run finish; the
acceptance is recorded with it. The command-line trainer, the studio's runs and the background
fine-tuner all decide through :func:`decide`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

FINISHED, NOT_PROVEN, REJECTED = "finished", "not proven", "rejected"
DEFAULT_FORGETTING_THRESHOLD = 0.01  # NDCG@10 on the 0..1 scale: one point


@dataclass
class GateDecision:
    """The run's outcome and the measurements it rests on (stored with the run, shown by the UIs)."""

    status: str
    """finished, not proven or rejected."""
    verdict: str
    """better, not proven or worse: the paired verdict of the primary metric."""
    reason: str
    metric: str
    before: float | None = None
    after: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    queries: int = 0
    forgetting: dict[str, Any] = field(default_factory=dict)
    accepted_worse: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> GateDecision:
        return cls(**{key: payload[key] for key in cls.__dataclass_fields__ if key in payload})

    def summary(self) -> str:
        """One line: outcome, the primary metric before → after with its interval, and the reason."""
        figures = ""
        if self.before is not None and self.after is not None:
            figures = f"{self.metric} {self.before:.4f} → {self.after:.4f}"
            if self.ci_low is not None and self.ci_high is not None:
                figures += f" (Δ {self.delta:+.4f}, 95% CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}])"
        label = self.status + (" (worse accepted by the user)" if self.accepted_worse else "")
        return f"{label}: {figures}; {self.reason}" if figures else f"{label}: {self.reason}"


def decide(primary: Mapping[str, Any] | None, *, metric: str, forgetting: Mapping[str, Any] | None = None,
           forgetting_threshold: float = DEFAULT_FORGETTING_THRESHOLD, max_drop: float | None = None,
           accept_worse: bool = False) -> GateDecision:
    """The outcome of a run from its paired held-out comparison and its forgetting check.

    ``primary`` and ``forgetting`` are paired differences (``PairedDifference.to_dict()``: mean_a,
    mean_b, delta, ci_low, ci_high, n, verdict) of after minus before. Without a held-out
    comparison nothing is proven: the run is ``not proven``, never ``finished``.
    """
    forgetting_figures = _forgetting_figures(forgetting, forgetting_threshold)
    if primary is None:
        decision = GateDecision(NOT_PROVEN, NOT_PROVEN, "no held-out comparison was possible (no test split)",
                                metric, forgetting=forgetting_figures)
    else:
        decision = GateDecision(
            status=NOT_PROVEN, verdict=str(primary["verdict"]), reason="", metric=metric,
            before=float(primary["mean_a"]), after=float(primary["mean_b"]), delta=float(primary["delta"]),
            ci_low=float(primary["ci_low"]), ci_high=float(primary["ci_high"]), queries=int(primary["n"]),
            forgetting=forgetting_figures,
        )
        _judge(decision, max_drop)
    if forgetting_figures.get("over_threshold") and decision.status != REJECTED:
        decision.status = REJECTED
        decision.reason = (f"forgetting: {forgetting_figures['data']} NDCG@10 {forgetting_figures['before']:.4f} → "
                           f"{forgetting_figures['after']:.4f} ({forgetting_figures['delta'] * 100:+.2f} points, "
                           f"threshold −{forgetting_threshold * 100:g})")
    if decision.status == REJECTED and accept_worse:
        decision.accepted_worse = True
        decision.status = FINISHED if decision.verdict == "better" else NOT_PROVEN
    return decision


def _judge(decision: GateDecision, max_drop: float | None) -> None:
    dropped_too_far = max_drop is not None and decision.delta is not None and decision.delta < -max_drop - 1e-12
    if decision.verdict == "worse" or dropped_too_far:
        decision.status = REJECTED
        decision.reason = (f"{decision.metric} is worse on {decision.queries} held-out queries"
                           if decision.verdict == "worse" else
                           f"{decision.metric} fell {decision.before:.4f} → {decision.after:.4f} on "
                           f"{decision.queries} held-out examples (allowed drop {max_drop:g})")
    elif decision.verdict == "better":
        decision.status = FINISHED
        decision.reason = f"{decision.metric} is better on {decision.queries} held-out queries"
    else:
        decision.reason = (f"the change in {decision.metric} on {decision.queries} held-out queries is within "
                           "noise (the interval includes 0)")


def _forgetting_figures(forgetting: Mapping[str, Any] | None, threshold: float) -> dict[str, Any]:
    if not forgetting:
        return {}
    delta = float(forgetting["delta"])
    return {
        "data": str(forgetting.get("data", "general")), "before": float(forgetting["mean_a"]),
        "after": float(forgetting["mean_b"]), "delta": delta, "ci_low": float(forgetting["ci_low"]),
        "ci_high": float(forgetting["ci_high"]), "queries": int(forgetting["n"]),
        "verdict": str(forgetting["verdict"]), "threshold": threshold, "over_threshold": delta < -threshold - 1e-12,
    }
