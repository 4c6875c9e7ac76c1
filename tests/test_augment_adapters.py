"""Typo augmentation, mined-negative flags and review, LoRA adapter listing and merging."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.adapters import list_adapters, merge_adapter
from core.data.augment import (
    MinedNegative,
    augment_with_typos,
    load_reviewed_negatives,
    mine_negatives,
    negatives_frame,
    typo_variants,
)
from core.embedders import load_embedder
from core.errors import EmbtuneError, ModelLoadError
from core.training.train import train
from storage.db import Database
from tests.conftest import COMPLETED
from tests.test_training import config


def test_typo_variants_are_seeded_distinct_and_different() -> None:
    first = typo_variants("шуруповерт аккумуляторный", 4, seed=1)
    assert first == typo_variants("шуруповерт аккумуляторный", 4, seed=1)
    assert len(first) == 4 and len(set(first)) == 4
    assert "шуруповерт аккумуляторный" not in first
    assert typo_variants("дымоход", 3, seed=1, operations=["split"])[0].replace(" ", "") == "дымоход"
    with pytest.raises(Exception, match="unknown typo operation 'shout'"):
        typo_variants("x", 1, operations=["shout"])


def test_lookalike_swaps_script_but_keeps_shape() -> None:
    variant = typo_variants("pipe", 1, seed=0, operations=["lookalike"])[0]
    assert variant != "pipe" and len(variant) == 4 and any("\u0400" <= ch <= "\u04ff" for ch in variant)


def test_augmented_rows_keep_positive_and_group() -> None:
    frame = pd.DataFrame({"anchor": ["дымоход", "drill"], "positive": ["Труба", "Drill"],
                          "query_id": ["Q1", "Q2"], "kind": ["exact", "exact"]})
    out = augment_with_typos(frame, 2, seed=3)
    assert len(out) == 6
    extra = out.iloc[2:]
    assert set(extra["kind"]) == {"typo_aug"}
    for _, row in extra.iterrows():
        original = frame[frame["query_id"] == row["query_id"]].iloc[0]
        assert row["positive"] == original["positive"] and row["anchor"] != original["anchor"]


def test_mined_negatives_flag_close_and_labelled_relevant(tiny_model_dir: Path) -> None:
    model = load_embedder(str(tiny_model_dir), device="cpu", cache=False).model
    frame = pd.DataFrame({"anchor": ["chimney pipe", "chimney pipe", "garden hose"],
                          "positive": ["chimney pipe steel", "chimney pipe black", "garden hose green"],
                          "score": [1.0, 1.0, 1.0]})
    corpus = ["chimney pipe steel", "chimney pipe black", "garden hose green", "paint white", "drill",
              "chimney pipe steel 2", "hose reel"]
    mined = mine_negatives(model, frame, corpus, num_negatives=3, relative_margin=0.5)
    assert mined and all(m.negative != m.positive for m in mined)
    positives = {"chimney pipe": {"chimney pipe steel", "chimney pipe black"}, "garden hose": {"garden hose green"}}
    # a positive of the same anchor is never offered as a clean negative
    assert not [m for m in mined if m.flag == "" and m.negative in positives[m.anchor]]
    assert {m.flag for m in mined} <= {"", "close_to_positive", "labelled_relevant"}
    for m in mined:
        if m.flag == "close_to_positive":
            assert m.negative_score >= 0.5 * m.positive_score
    usable = negatives_frame(mined)
    assert set(usable["negative"]) == {m.negative for m in mined if m.flag == ""}


def test_reviewed_negatives_decide_what_trains() -> None:
    base = {"anchor": "a", "positive": "p", "positive_score": 0.9, "negative_score": 0.89}
    mined = [MinedNegative(negative="clean", flag="", **base),
             MinedNegative(negative="close", flag="close_to_positive", **base),
             MinedNegative(negative="confirmed", flag="close_to_positive", review="not_relevant", **base),
             MinedNegative(negative="right", flag="close_to_positive", review="relevant", **base)]
    assert set(negatives_frame(mined)["negative"]) == {"clean", "confirmed"}
    assert set(negatives_frame(mined, include_flagged=True)["negative"]) == {"clean", "close", "confirmed"}


def test_training_with_hard_negatives_records_and_reviews_them(run_cli, tmp_path: Path,
                                                               tiny_model_dir: Path) -> None:
    result = train(config(tmp_path, tiny_model_dir, hard_negatives=2, augment_typos=1, negative_margin=0.2),
                   show_progress=False)
    assert result.status in COMPLETED and result.mined_negatives
    assert any("hard negatives:" in w for w in result.warnings)
    stored = load_reviewed_negatives(result.output_dir)
    assert len(stored) == len(result.mined_negatives)
    listing = run_cli("negatives", "review", result.output_dir, "--all", "--mark", "0=relevant")
    assert listing.code == 0, listing.err
    assert f"{len(stored)} mined negatives" in listing.out
    assert load_reviewed_negatives(result.output_dir)[0].review == "relevant"
    bad = run_cli("negatives", "review", result.output_dir, "--mark", "9999=relevant")
    assert bad.code == 1 and "must be N=relevant" in bad.err
    # a reviewed file trains again: the confirmed-relevant one becomes a positive, never a negative
    again = train(config(tmp_path, tiny_model_dir, output_dir=str(tmp_path / "again"),
                         negatives_file=result.output_dir), show_progress=False)
    assert again.status in COMPLETED


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    tmp_path = tmp_path_factory.mktemp("lora")
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    result = train(config(tmp_path, tiny_model_dir, lora=True, lora_r=4, learning_rate=5e-3, run_name="lora-a"),
                   db=db, show_progress=False)
    return tmp_path, db, result


def test_adapters_list_shows_base_rank_size(lora_run, tiny_model_dir: Path) -> None:
    _, db, _ = lora_run
    adapters = list_adapters(db)
    assert [a.run for a in adapters] == ["lora-a"]
    assert adapters[0].rank == 4 and adapters[0].base == str(tiny_model_dir) and adapters[0].size_bytes > 0
    assert adapters[0].ndcg10_after is not None


def test_merged_adapter_equals_adapter_model_and_loads_without_peft(lora_run, tmp_path: Path) -> None:
    _, db, result = lora_run
    merged_dir = merge_adapter("run:lora-a", tmp_path / "merged", db=db)
    assert not (merged_dir / "adapter_config.json").exists()
    assert "Merged by embtune" in (merged_dir / "README.md").read_text()
    adapter_model = load_embedder(result.output_dir, device="cpu", cache=False, reuse=False)
    merged = load_embedder(str(merged_dir), device="cpu", cache=False, reuse=False)
    texts = ["chimney pipe", "garden hose 3", "труба"]
    a, b = adapter_model.encode(texts), merged.encode(texts)
    assert np.min(np.sum(a * b, axis=1)) >= 0.9999
    with pytest.raises(EmbtuneError, match="already exists"):
        merge_adapter("run:lora-a", merged_dir, db=db)


def test_adapter_of_wrong_base_and_missing_files(lora_run, tmp_path: Path, tiny_model_dir_48: Path) -> None:
    _, _db, result = lora_run
    with pytest.raises(EmbtuneError, match="does not fit base"):
        merge_adapter(result.output_dir, tmp_path / "x", base=str(tiny_model_dir_48))
    assert not (tmp_path / "x").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(ModelLoadError, match=r"adapter_model\.safetensors is missing"):
        merge_adapter(str(broken), tmp_path / "y")
