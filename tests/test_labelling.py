"""Labelling logic behind the studio's Label page: candidates, progress, agreement, import/export."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core import labelling
from core.collection import Collection
from core.embedders.base import Embedder
from core.errors import DataError, EmbtuneError


@dataclass
class Label:
    query: str
    item_key: str
    score: float
    annotator: str
    id: int = 0
    item_text: str | None = None
    created_at: dt.datetime | None = None


class KeywordEmbedder(Embedder):
    """Vectors from word counts over a fixed vocabulary: rankings a test can predict (through the real encode loop
    every embedder shares; no prompts, so queries and documents read the same)."""

    def __init__(self, vocabulary: list[str], fingerprint: str = "kw") -> None:
        self.vocabulary = vocabulary
        self._fingerprint = fingerprint
        self.model_id = fingerprint

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def dimension(self) -> int:
        return len(self.vocabulary)

    def _run_texts(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        rows = np.array([[text.lower().split().count(word) + 0.01 for word in self.vocabulary] for text in texts],
                        dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


WORDS = ["chimney", "pipe", "drill", "hose", "paint", "steel"]
ITEMS = {
    "c1": "chimney pipe steel", "c2": "chimney pipe", "c3": "chimney", "p1": "pipe steel", "p2": "pipe",
    "d1": "drill", "d2": "drill steel", "h1": "hose", "h2": "hose pipe", "x1": "paint", "x2": "paint steel",
}


@pytest.fixture()
def collection() -> Collection:
    embedder = KeywordEmbedder(WORDS)
    return Collection.from_items(list(ITEMS), list(ITEMS.values()), embedder=embedder)


def test_candidates_start_with_the_models_top_k(collection: Collection) -> None:
    candidates = labelling.propose_candidates(collection, "chimney pipe", k=3, uncertain=0)
    expected = collection.search("chimney pipe", 3)
    assert [round(c.score, 5) for c in candidates] == [round(h.score, 5) for h in expected]  # ties may swap ids
    assert all(c.reason == "top-k" for c in candidates)
    assert candidates[0].item_id == "c2"


def test_uncertain_candidates_are_those_nearest_the_boundary_this_querys_labels_set(collection: Collection) -> None:
    hits = {h.id: h.score for h in collection.search("chimney pipe", len(collection))}
    labelled = {"c2": 1.0, "x1": 0.0}  # boundary = midpoint of these two scores
    boundary = (hits["c2"] + hits["x1"]) / 2
    candidates = labelling.propose_candidates(collection, "chimney pipe", k=2, uncertain=2, labelled=labelled)
    extras = [c for c in candidates if c.reason == "boundary"]
    rest = sorted((abs(score - boundary), item) for item, score in hits.items()
                  if item not in [c.item_id for c in candidates[:2]])
    assert [c.item_id for c in extras] == [item for _, item in rest[:2]]
    assert next(c for c in candidates if c.item_id == "c2").labelled == 1.0


def test_disagreement_candidates_come_first_when_a_second_model_is_given(collection: Collection) -> None:
    # The second model only sees "steel": it ranks the steel items first, which the first model ranks low.
    other = KeywordEmbedder(["steel", "hose"], fingerprint="other")
    candidates = labelling.propose_candidates(collection, "chimney pipe steel", k=1, uncertain=2, other=other)
    extras = [c for c in candidates if c.reason == "disagreement"]
    assert len(extras) == 2
    assert all(c.other_rank is not None and abs(c.other_rank - c.rank) >= 3 for c in extras)


def test_candidates_refuse_an_empty_query(collection: Collection) -> None:
    with pytest.raises(EmbtuneError, match="empty"):
        labelling.propose_candidates(collection, "  ")


def test_next_unlabelled_query_is_per_annotator() -> None:
    labels = [Label("a", "1", 1.0, "ann"), Label("b", "1", 0.0, "bob")]
    assert labelling.next_unlabelled_query(["a", "b", "c"], labels, "ann") == "b"
    assert labelling.next_unlabelled_query(["a", "b"], [*labels, Label("b", "2", 1, "ann")], "ann") is None
    assert labelling.next_unlabelled_query(["a", "b", "c", "d"], labels, "ann", after="c") == "d"
    assert labelling.next_unlabelled_query(["a", "b", "c", "d"], labels, "ann", after="d") == "b"


def test_progress_counts_pairs_queries_and_a_histogram() -> None:
    labels = [Label("a", "1", 1.0, "ann"), Label("a", "2", 0.0, "ann"), Label("b", "1", 0.5, "bob")]
    progress = labelling.label_progress(labels)
    assert progress["pairs"] == 3 and progress["queries"] == 2 and progress["annotators"] == ["ann", "bob"]
    assert sum(row["count"] for row in progress["histogram"]) == 3


def test_agreement_share_and_kappa_match_scikit_learn_and_list_disagreements() -> None:
    from sklearn.metrics import cohen_kappa_score

    ann = [1.0, 0.0, 0.5, 1.0, 0.0, 1.0]
    bob = [1.0, 0.0, 1.0, 1.0, 0.5, 1.0]
    labels = [Label("q", str(i), s, "ann") for i, s in enumerate(ann)]
    labels += [Label("q", str(i), s, "bob") for i, s in enumerate(bob)]
    labels.append(Label("q", "solo", 1.0, "ann"))  # scored by one annotator only: not compared
    result = labelling.annotator_agreement(labels)
    [pair] = result["pairs"]
    assert pair["shared_pairs"] == 6
    assert pair["share_equal"] == pytest.approx(4 / 6)
    expected = cohen_kappa_score([str(a) for a in ann], [str(b) for b in bob], labels=["0.0", "0.5", "1.0"])
    assert pair["cohen_kappa"] == pytest.approx(expected)
    assert {d["item_id"] for d in result["disagreements"]} == {"2", "4"}


def test_agreement_buckets_finer_scores_and_keeps_the_latest_label() -> None:
    early, late = dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2)
    labels = [Label("q", "1", 0.0, "ann", created_at=early), Label("q", "1", 0.9, "ann", id=2, created_at=late),
              Label("q", "1", 1.0, "bob", created_at=early)]
    [pair] = labelling.annotator_agreement(labels)["pairs"]
    assert pair["share_equal"] == 1.0 and pair["cohen_kappa"] == 1.0


@pytest.mark.parametrize(("file_format", "name"), [("csv", "l.csv"), ("jsonl", "l.jsonl"), ("hf", "l_hf")])
def test_exported_labels_import_back_unchanged(tmp_path: Path, file_format: str, name: str) -> None:
    labels = [Label("дымо ход", "P1", 1.0, "ann", item_text="Дымоход"), Label("drill", "P2", 0.25, "bob")]
    target = labelling.export_labels(labels, tmp_path / name, file_format)
    rows = labelling.read_labels(target, collection="cat", default_annotator="x")
    assert [(r["query"], r["item_key"], r["score"], r["annotator"]) for r in rows] == \
        [("дымо ход", "P1", 1.0, "ann"), ("drill", "P2", 0.25, "bob")]


def test_label_import_names_the_row_and_field_of_a_bad_score(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("query,item_id,score\nok,P1,1\nbad,P2,1.7\nworse,P3,high\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 2: score: '1.7' is not a number in 0..1 \(2 problems in all\)"):
        labelling.read_labels(path, collection="cat", default_annotator="x")


def test_label_import_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("question,item_id,score\nok,P1,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="no column 'query'"):
        labelling.read_labels(path, collection="cat", default_annotator="x")


def test_unknown_export_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbtuneError, match="unknown"):
        labelling.export_labels([], tmp_path / "x", "xlsx")
