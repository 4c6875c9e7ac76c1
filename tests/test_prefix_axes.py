"""The principal axes added after a Matryoshka run: an orthonormal basis by variance, no full-width cosine
changed, saved as a plain Dense module, kept only when validation at the smallest dimension does not fall."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.stats import ortho_group
from sentence_transformers import SentenceTransformer

from core.data.split import split_by_group
from core.data.training_data import group_column_for, load_training_data, retrieval_set_for
from core.embedders import load_embedder
from core.evaluation import RetrievalSet, evaluate_retrieval
from core.training.prefix_axes import add_rotation, align_prefixes, principal_axes
from core.training.train import train
from storage.db import Database
from storage.runs import RunStore
from tests.conftest import COMPLETED
from tests.test_training import config

TEXTS = ["chimney pipe 115 mm", "дымоход из нержавейки", "cordless drill 18 V", "шуруповерт аккумуляторный",
         "garden hose 20 m", "краска для дерева", "radiator valve", "труба гофрированная"]


def _cosines(vectors: np.ndarray) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def _module_types(folder: Path) -> list[str]:
    return [entry["type"].rsplit(".", 1)[-1] for entry in json.loads((folder / "modules.json").read_text())]


def test_the_axes_are_an_orthonormal_basis_ordered_by_variance() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 12)) * 0.1
    vectors[:, 7] *= 30  # the direction the data varies along most
    vectors[:, 2] *= 10  # the second
    axes = principal_axes(vectors)
    assert axes.shape == (12, 12)
    np.testing.assert_allclose(axes @ axes.T, np.eye(12), atol=1e-5)
    assert abs(axes[0, 7]) > 0.99 and abs(axes[1, 2]) > 0.99
    spread = (vectors @ axes.T).var(axis=0)
    assert np.all(np.diff(spread) <= 1e-9)
    # fewer texts than dimensions: the basis is still complete and orthonormal
    few = principal_axes(vectors[:5])
    assert few.shape == (12, 12)
    np.testing.assert_allclose(few @ few.T, np.eye(12), atol=1e-5)


def test_a_rotation_changes_no_full_width_cosine_and_loads_in_plain_sentence_transformers(
        tmp_path: Path, tiny_model_dir: Path) -> None:
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    before = model.encode(TEXTS)
    rotation = ortho_group.rvs(32, random_state=1).astype(np.float32)
    add_rotation(model, rotation)
    after = model.encode(TEXTS)
    np.testing.assert_allclose(_cosines(after), _cosines(before), atol=1e-5)
    np.testing.assert_allclose(after, before @ rotation.T, atol=1e-4)
    assert not np.allclose(_cosines(after[:, :8]), _cosines(before[:, :8]), atol=1e-3)  # the prefixes did change
    model.save(str(tmp_path / "rotated"))
    assert _module_types(tmp_path / "rotated")[-1] == "Dense"
    reloaded = SentenceTransformer(str(tmp_path / "rotated"), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(reloaded, after, atol=1e-5)


def test_a_matryoshka_run_adds_the_axes_only_where_validation_does_not_fall(tmp_path: Path,
                                                                             tiny_model_dir: Path) -> None:
    """Two runs with one seed, the axes on and off: the full width is the same model either way, the record's
    validation figures are what evaluating the two models on the validation split gives, and the rotated model is
    what was saved exactly when validation did not fall."""
    settings = {"matryoshka_dims": [32, 8], "epochs": 1, "seed": 7}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with_axes = train(config(tmp_path / "a", tiny_model_dir, run_name="axes", **settings), db=db,
                      show_progress=False)
    without = train(config(tmp_path / "b", tiny_model_dir, principal_axes=False, **settings), show_progress=False)
    assert with_axes.status in COMPLETED and without.status in COMPLETED
    assert without.prefix_axes == {} and "Dense" not in _module_types(Path(without.output_dir))
    outcome = with_axes.prefix_axes
    assert outcome["dimension"] == 8 and outcome["fit_texts"] > 0
    assert RunStore(db).get("axes").before_after["prefix_axes"] == outcome  # what the Compare page shows
    tuned = load_embedder(with_axes.output_dir, device="cpu", cache=False)
    plain = load_embedder(without.output_dir, device="cpu", cache=False)
    np.testing.assert_allclose(_cosines(tuned.encode(TEXTS)), _cosines(plain.encode(TEXTS)), atol=1e-4)

    data = load_training_data(str(tmp_path / "a" / "pairs.csv"))
    splits = split_by_group(data.frame, group_column_for(data.frame, "auto"), validation=0.1, test=0.2, seed=7,
                            source=str(tmp_path / "a" / "pairs.csv"))
    validation = retrieval_set_for(splits.validation, data.corpus, "validation")
    at_8 = {name: evaluate_retrieval(embedder, validation, dimensions=[8]).metric("ndcg@10", 8)
            for name, embedder in (("axes", tuned), ("plain", plain))}
    assert abs(outcome["validation_before"] - at_8["plain"]) < 1e-4
    assert ("Dense" in _module_types(Path(with_axes.output_dir))) == outcome["kept"]
    if outcome["kept"]:
        assert outcome["validation_after"] >= outcome["validation_before"]
        assert abs(outcome["validation_after"] - at_8["axes"]) < 1e-4
    else:
        assert outcome["validation_after"] < outcome["validation_before"]
        assert abs(at_8["axes"] - at_8["plain"]) < 1e-4


def test_the_cli_flag_turns_the_axes_off(run_cli, tmp_path: Path, tiny_model_dir: Path) -> None:
    from tests.test_training import pairs_file

    result = run_cli("train", "--data", str(pairs_file(tmp_path)), "--output-dir", str(tmp_path / "model"),
                     "--model", str(tiny_model_dir), "--epochs", "1", "--batch-size", "8", "--matryoshka-dims",
                     "32,8", "--device", "cpu", "--no-forgetting-check", "--accept-worse", "--similarity-anchor", "0",
                     "--no-principal-axes")
    assert result.code == 0, result.err
    record = json.loads((tmp_path / "model" / "embtune_run.json").read_text())
    assert record["config"]["principal_axes"] is False and record["result"]["prefix_axes"] == {}
    assert "principal axes" not in result.out


def test_axes_that_would_lower_validation_are_not_added(tiny_model_dir: Path) -> None:
    """Validation judged by the unrotated 8-d prefix's own first item: it scores 1.0 there, any other order less."""
    model = SentenceTransformer(str(tiny_model_dir), device="cpu")
    embedder = load_embedder(str(tiny_model_dir), device="cpu", cache=False)
    corpus = {f"i{n}": text for n, text in enumerate(TEXTS)}
    queries = {f"q{n}": f"{word} {n}" for n, word in enumerate(["pipe", "drill", "hose", "труба", "краска", "valve"])}
    probe = RetrievalSet("probe", queries, corpus, {q: {"i0": 1.0} for q in queries})  # rankings ignore qrels
    prefix = evaluate_retrieval(embedder, probe, dimensions=[8])
    first = {q: ranking[0][0] for q, ranking in prefix.rankings[8].items()}
    validation = RetrievalSet("validation", queries, corpus, {q: {item: 1.0} for q, item in first.items()})
    before = model.encode(TEXTS)
    outcome = align_prefixes(model, embedder, queries=list(queries.values()), validation=validation, dimension=8)
    assert outcome.validation_before == 1.0 and outcome.validation_after < 1.0 and not outcome.kept
    assert "not kept" in outcome.reason
    np.testing.assert_allclose(model.encode(TEXTS), before, atol=1e-6)  # the model was left as it was
