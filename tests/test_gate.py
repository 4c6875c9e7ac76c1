"""The training gate: its verdicts on planted effects, and which run a name or a demo picks."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import EmbtuneError
from core.evaluation.paired import paired_difference
from core.training.gate import FINISHED, NOT_PROVEN, REJECTED, decide
from core.training.runs import effective_status, newest_servable_run, resolve_model_spec, servable_spec, state_label
from storage.db import Database
from storage.runs import RunStore

RNG = np.random.default_rng(7)
BASE = RNG.uniform(0.2, 0.8, size=200)


def paired(shift: float, noise: float = 0.05, data: str = "general") -> dict:
    """After minus before over 200 queries, with a planted mean shift."""
    after = np.clip(BASE + shift + RNG.normal(0, noise, size=BASE.size), 0, 1)
    return {**paired_difference(BASE, after).to_dict(), "data": data}


def test_a_planted_gain_finishes_a_planted_loss_is_rejected_identical_is_not_proven() -> None:
    better = decide(paired(+0.08), metric="dim_64_ndcg@10")
    worse = decide(paired(-0.08), metric="dim_64_ndcg@10")
    same = decide(paired_difference(BASE, BASE.copy()).to_dict(), metric="dim_64_ndcg@10")
    assert (better.status, better.verdict) == (FINISHED, "better") and better.ci_low > 0
    assert (worse.status, worse.verdict) == (REJECTED, "worse") and worse.ci_high < 0
    assert "worse on 200 held-out queries" in worse.reason
    assert (same.status, same.verdict) == (NOT_PROVEN, "not proven")


def test_forgetting_over_the_threshold_rejects_a_run_that_is_better_in_domain() -> None:
    decision = decide(paired(+0.08), metric="dim_64_ndcg@10", forgetting=paired(-0.03), forgetting_threshold=0.01)
    assert decision.verdict == "better" and decision.status == REJECTED
    assert decision.reason.startswith("forgetting: general NDCG@10") and "threshold −1" in decision.reason
    assert decision.forgetting["over_threshold"] and decision.forgetting["ci_high"] < 0
    kept = decide(paired(+0.08), metric="dim_64_ndcg@10", forgetting=paired(-0.03), forgetting_threshold=0.05)
    assert kept.status == FINISHED and not kept.forgetting["over_threshold"]


def test_accept_worse_lets_a_rejected_run_finish_and_records_it() -> None:
    decision = decide(paired(-0.08), metric="m", accept_worse=True)
    assert decision.status == NOT_PROVEN and decision.verdict == "worse" and decision.accepted_worse
    assert "worse accepted by the user" in decision.summary()
    assert not decide(paired(+0.08), metric="m", accept_worse=True).accepted_worse  # nothing to accept


def test_a_point_drop_beyond_max_drop_rejects_even_when_not_significant() -> None:
    before, after = np.ones(4), np.array([1.0, 1.0, 1.0, 0.0])  # 4 examples: never significant
    difference = paired_difference(before, after).to_dict()
    assert difference["verdict"] == "not proven"
    assert decide(difference, metric="top-1", max_drop=0.0).status == REJECTED
    assert decide(difference, metric="top-1", max_drop=0.5).status == NOT_PROVEN
    one = paired_difference(np.ones(1), np.zeros(1)).to_dict()  # a single held-out example
    assert (one["verdict"], one["p_value"]) == ("not proven", 1.0)
    assert decide(one, metric="top-1", max_drop=0.0).status == REJECTED


def test_without_a_held_out_comparison_a_run_is_never_finished() -> None:
    decision = decide(None, metric="dim_384_ndcg@10")
    assert decision.status == NOT_PROVEN and "no held-out comparison" in decision.reason


@pytest.fixture()
def db(tmp_path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'runs.sqlite'}")


def add_run(db: Database, name: str, status: str, *, gate: dict | None = None, collection: str = "shop",
            **fields) -> None:
    runs = RunStore(db)
    runs.start(name, collection_name=collection, config={}, model_path=f"/models/{name}")
    runs.update(name, status=status, before_after={"gate": gate} if gate else {}, **fields)


def test_latest_picks_the_newest_better_run_then_not_proven_never_rejected(db: Database) -> None:
    add_run(db, "good-old", FINISHED, gate=decide(paired(+0.08), metric="m").to_dict())
    add_run(db, "unsure", NOT_PROVEN, gate=decide(None, metric="m").to_dict())
    add_run(db, "bad-new", REJECTED, gate=decide(paired(-0.08), metric="m").to_dict())
    add_run(db, "killed", "interrupted", progress={"step": 8})
    assert newest_servable_run(db, "shop").name == "good-old"
    assert servable_spec("shop", db) == "run:good-old"
    assert resolve_model_spec("run:latest", db) == "/models/good-old"
    # a rejected run is used only when named
    assert resolve_model_spec("run:bad-new", db) == "/models/bad-new"
    assert state_label(RunStore(db).get("bad-new")).startswith("rejected: m is worse")
    with pytest.raises(EmbtuneError, match="run:killed is interrupted at step 8: it has no model"):
        resolve_model_spec("run:killed", db)

    RunStore(db).update("good-old", status=REJECTED)
    assert servable_spec("shop", db) == "run:unsure"
    RunStore(db).update("unsure", status="failed", error="boom")
    assert servable_spec("shop", db) is None
    with pytest.raises(EmbtuneError, match="run:latest: no finished training run for collection 'shop'"):
        resolve_model_spec("run:latest", db, collection="shop")


def test_a_legacy_done_run_is_classified_by_its_stored_comparisons(db: Database) -> None:
    worse_at_64 = {**paired(-0.08), "dimension": 64, "metric": "ndcg@10"}
    better_at_384 = {**paired(+0.08), "dimension": 384, "metric": "ndcg@10"}
    runs = RunStore(db)
    runs.start("legacy", collection_name="shop", config={"metric_for_best": "auto"}, model_path="/models/legacy")
    runs.update("legacy", status="done", before_after={"comparisons": [better_at_384, worse_at_64]})
    run = runs.get("legacy")
    assert effective_status(run) == REJECTED  # the smallest trained dimension decides, as the gate does
    assert newest_servable_run(db, "shop") is None
