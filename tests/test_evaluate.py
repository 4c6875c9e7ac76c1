"""Evaluation: trec_eval metrics (graded and binary), parity with sentence-transformers, paired statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.embedders import load_embedder
from core.errors import DataError, EmbtuneError
from core.evaluation import (
    METRICS,
    EvaluationResult,
    RetrievalSet,
    compare_results,
    comparison_table,
    evaluate_retrieval,
    load_retrieval_set,
    regressions,
    trec_metrics,
)
from tests.conftest import SHARED_DATA, write_csv

CORPUS = {f"d{i}": text for i, text in enumerate(
    ["chimney pipe steel", "garden hose", "paint white", "drill cordless", "труба дымоход", "chimney cap",
     "hose reel", "paint brush", "drill bits", "pipe wrench", "steel nails", "garden rake"])}
QUERIES = {"q1": "chimney", "q2": "hose", "q3": "paint", "q4": "drill", "q5": "труба", "q6": "pipe",
           "q7": "garden", "q8": "steel"}
QRELS = {"q1": {"d0": 1.0, "d5": 0.5}, "q2": {"d1": 1.0, "d6": 0.5}, "q3": {"d2": 1.0, "d7": 0.25},
         "q4": {"d3": 1.0, "d8": 0.5}, "q5": {"d4": 1.0}, "q6": {"d0": 1.0, "d9": 1.0}, "q7": {"d1": 0.5, "d11": 1.0},
         "q8": {"d10": 1.0, "d0": 0.5}}


@pytest.fixture(scope="module")
def small_set() -> RetrievalSet:
    return RetrievalSet("small", dict(QUERIES), dict(CORPUS), {q: dict(j) for q, j in QRELS.items()})


def test_graded_ndcg_uses_scores_as_gains() -> None:
    values = trec_metrics({"q": {"a": 1.0, "b": 0.5}}, {"q": {"b": 0.9, "a": 0.8, "c": 0.1}})
    dcg = 0.5 + 1.0 / math.log2(3)
    ideal = 1.0 + 0.5 / math.log2(3)
    assert values["ndcg@10"]["q"] == pytest.approx(dcg / ideal, abs=1e-9)
    assert values["ndcg@10_binary"]["q"] == pytest.approx(1.0)  # both count as relevant when binary
    assert values["mrr@10"]["q"] == pytest.approx(1.0)


def test_binary_metrics_use_the_threshold() -> None:
    values = trec_metrics({"q": {"a": 1.0, "weak": 0.25}}, {"q": {"weak": 0.9, "a": 0.8}})
    assert values["mrr@10"]["q"] == pytest.approx(0.5)  # the 0.25 item is not relevant
    assert values["recall@1"]["q"] == 0.0 and values["recall@3"]["q"] == 1.0


def test_binary_metrics_agree_with_sentence_transformers(tiny_model_dir: Path, small_set: RetrievalSet) -> None:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    ours = evaluate_retrieval(embedder, small_set)
    relevant = {q: {i for i, s in judged.items() if s >= 0.5} for q, judged in small_set.qrels.items()}
    theirs = InformationRetrievalEvaluator(small_set.queries, small_set.corpus, relevant, mrr_at_k=[10],
                                           ndcg_at_k=[10], accuracy_at_k=[1], precision_recall_at_k=[1, 3, 10],
                                           map_at_k=[100], show_progress_bar=False, name="x")(embedder.model)
    pairs = {"ndcg@10_binary": "ndcg@10", "mrr@10": "mrr@10", "recall@1": "recall@1", "recall@3": "recall@3",
             "recall@10": "recall@10", "map@100": "map@100"}
    for ours_name, theirs_name in pairs.items():
        assert ours.metric(ours_name) == pytest.approx(theirs[f"x_cosine_{theirs_name}"], abs=1e-6), ours_name


def test_every_dimension_has_named_means_and_per_query_values(tiny_model_dir: Path,
                                                              small_set: RetrievalSet) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu")
    result = evaluate_retrieval(embedder, small_set, dimensions=[32, 16, 8])
    assert result.dimensions == [32, 16, 8]
    assert {f"dim_{d}_{m}" for d in (32, 16, 8) for m in (*METRICS, "spearman")} == set(result.metrics)
    assert len(result.per_query_rows()) == 3 * len(METRICS) * len(QUERIES)
    for dimension in (32, 16, 8):
        assert np.mean(list(result.per_query[dimension]["ndcg@10"].values())) == pytest.approx(
            result.metric("ndcg@10", dimension))
    assert len(result.rankings[16]["q1"]) == 10
    again = EvaluationResult.from_dict(result.to_dict())
    assert again.metrics == result.metrics and again.per_query == result.per_query
    with pytest.raises(EmbtuneError, match="dimension 64 is not possible"):
        evaluate_retrieval(embedder, small_set, dimensions=[64])


def result_with(values: dict[str, float], name: str) -> EvaluationResult:
    per_query = {8: {metric: dict(values) for metric in METRICS}}
    return EvaluationResult(name, name, "planted", [8], {f"dim_8_{m}": float(np.mean(list(values.values())))
                                                         for m in METRICS}, per_query,
                            {8: {q: [("d0", 1.0)] for q in values}})


def test_identical_models_give_an_interval_containing_zero() -> None:
    rng = np.random.default_rng(1)
    values = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 60))}
    comparison = compare_results(result_with(values, "a"), result_with(values, "b"))[0]
    assert comparison.ci_low <= 0 <= comparison.ci_high
    assert comparison.verdict == "not proven" and comparison.ties == 60


def test_planted_gain_is_proven_and_a_loss_is_worse() -> None:
    rng = np.random.default_rng(2)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0.2, 0.6, 80))}
    better = {q: min(1.0, v + 0.15 + rng.normal(0, 0.05)) for q, v in base.items()}
    comparison = compare_results(result_with(base, "base"), result_with(better, "tuned"), resamples=1000)[0]
    assert comparison.ci_low > 0 and comparison.verdict == "better"
    assert comparison.p_value < 0.01 and comparison.wins > comparison.losses
    assert comparison.ci_low <= comparison.delta <= comparison.ci_high
    reverse = compare_results(result_with(better, "tuned"), result_with(base, "base"), resamples=1000)[0]
    assert reverse.verdict == "worse" and reverse.ci_high < 0
    assert "| 8 |" in comparison_table([comparison])


def test_noisy_small_difference_is_not_proven() -> None:
    rng = np.random.default_rng(3)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 20))}
    other = {q: float(np.clip(v + rng.normal(0.01, 0.3), 0, 1)) for q, v in base.items()}
    assert compare_results(result_with(base, "a"), result_with(other, "b"))[0].verdict == "not proven"


def test_comparing_on_different_queries_is_refused() -> None:
    with pytest.raises(EmbtuneError, match="different queries"):
        compare_results(result_with({"q1": 0.5, "q2": 0.1}, "a"), result_with({"q1": 0.5}, "b"))


def test_regressions_list_worst_first_with_rank_moves(tiny_model_dir: Path, small_set: RetrievalSet) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu")
    good = evaluate_retrieval(embedder, small_set)
    worse = EvaluationResult.from_dict(good.to_dict())
    worse.per_query[32]["ndcg@10"] = {q: v * (0.5 if q in ("q1", "q2") else 1.0)
                                      for q, v in good.per_query[32]["ndcg@10"].items()}
    worse.per_query[32]["ndcg@10"]["q1"] = 0.0
    found = regressions(good, worse, small_set, limit=5)
    assert [r.query_id for r in found][:1] == ["q1"]
    assert all(found[i].loss >= found[i + 1].loss for i in range(len(found) - 1))
    assert set(found[0].relevant_moves) == {"d0", "d5"} and len(found[0].top_a) == 5


def test_folder_and_pairs_files_load(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    write_csv(folder / "dev_corpus.csv", [["id", "text"], ["a", "alpha"], ["b", "beta"]])
    write_csv(folder / "dev_queries.csv", [["query_id", "query"], ["1", "first"]])
    write_csv(folder / "dev_qrels.csv", [["query_id", "item_id", "score"], ["1", "b", "1"]])
    loaded = load_retrieval_set(folder)
    assert loaded.qrels == {"1": {"b": 1.0}} and loaded.corpus == {"a": "alpha", "b": "beta"}
    pairs = write_csv(tmp_path / "pairs.csv", [["query", "item", "score"], ["q one", "alpha", "1"],
                                               ["q one", "beta", "0.5"], ["q two", "beta", "1"]])
    loaded = load_retrieval_set(pairs)
    assert len(loaded.queries) == 2 and set(loaded.corpus.values()) == {"alpha", "beta"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["query", "item", "score"], ["q", "a", "1.5"]], "row 1: score 1.5 is outside 0..1"),
        ([["query", "item", "score"], ["q", "a", "high"]], "row 1: score 'high' is not a number"),
        ([["query", "item_id", "score"], ["q", "a", "1"]], "has item ids but no corpus"),
        ([["query", "item", "grade"], ["q", "a", "1"]], "no column 'score'"),
    ],
)
def test_bad_evaluation_files(tmp_path: Path, rows: list[list[str]], message: str) -> None:
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_retrieval_set(write_csv(tmp_path / "bad.csv", rows))


@pytest.mark.integration
def test_medquad_dev_set_loads_from_shared() -> None:
    data = load_retrieval_set(SHARED_DATA / "medquad")
    assert len(data.queries) == 300 and len(data.corpus) == 572


def test_spearman_of_cosine_against_graded_scores(tiny_model_dir: Path, small_set: RetrievalSet) -> None:
    embedder = load_embedder(str(tiny_model_dir), device="cpu")
    result = evaluate_retrieval(embedder, small_set, dimensions=[32, 8])
    assert set(result.spearman) == {32, 8}
    assert -1.0 <= result.metrics["dim_8_spearman"] <= 1.0
    binary = RetrievalSet("b", dict(QUERIES), dict(CORPUS), {q: {i: 1.0 for i in j} for q, j in QRELS.items()})
    assert evaluate_retrieval(embedder, binary).spearman == {}
