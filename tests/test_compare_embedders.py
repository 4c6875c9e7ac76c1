"""compare-embedders: label metrics on planted data, then real (tiny) models through the CLI and the API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.compare_embedders import ComparisonResult, compare_embedders, label_metrics
from core.errors import DataError, EmbtuneError
from tests.conftest import build_tiny_clip, write_csv


def test_label_metrics_see_planted_clusters_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    labels = [str(i % 4) for i in range(40)]
    centres = rng.normal(size=(4, 24))
    clustered = np.stack([centres[int(label)] + rng.normal(scale=0.1, size=24) for label in labels])
    clustered /= np.linalg.norm(clustered, axis=1, keepdims=True)
    good = label_metrics(clustered.astype(np.float32), labels)
    assert good["top1"] == 1.0 and good["top5"] == 1.0 and good["discrimination"] > 0.5
    noise = rng.normal(size=(40, 24))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    bad = label_metrics(noise.astype(np.float32), labels)
    assert abs(bad["discrimination"]) < 0.1 and bad["top1"] < 0.6


def test_label_metrics_leave_the_item_itself_out() -> None:
    # Two identical vectors with different labels: a metric that counted the item itself would score 1.
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    result = label_metrics(vectors, ["a", "b", "a", "b"])
    # Same label: cosine 0; other labels: one twin (1) and one orthogonal (0), mean 0.5.
    assert result["top1"] == 0.0 and result["discrimination"] == pytest.approx(-0.5)


@pytest.fixture()
def labelled_texts(tmp_path: Path) -> Path:
    words = {"tools": ["drill", "hammer drill", "drill bits", "cordless drill"],
             "garden": ["garden hose", "hose reel", "garden hose 20m", "hose"],
             "roof": ["chimney pipe", "chimney", "pipe", "chimney cap"]}
    rows = [["text", "label"]] + [[text, label] for label, texts in words.items() for text in texts]
    return write_csv(tmp_path / "labelled.csv", rows)


def test_compare_two_text_models_prints_table_and_verdict(labelled_texts: Path, run_cli, tiny_model_dir: Path,
                                                          tiny_model_dir_48: Path, tmp_path: Path) -> None:
    result = run_cli("compare-embedders", "--data", str(labelled_texts), "--model", str(tiny_model_dir),
                     "--model", str(tiny_model_dir_48), "--text-column", "text", "--label-column", "label",
                     "--device", "cpu", "--json", str(tmp_path / "compare.json"))
    assert result.code == 0, result.err
    assert "12 text items, 3 labels (12 items with a same-label neighbour)" in result.out
    table_rows = [line for line in result.out.splitlines() if not line.startswith("verdict")
                  and (str(tiny_model_dir)[-30:] in line or str(tiny_model_dir_48)[-30:] in line)]
    assert len(table_rows) == 2 and all(len(row.split()) == 8 for row in table_rows)
    verdict = [line for line in result.out.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and ("best discrimination" in verdict[0] or "best on both" in verdict[0])
    import json

    saved = json.loads((tmp_path / "compare.json").read_text())
    assert [m["dimension"] for m in saved["models"]] == [32, 48]
    assert saved["verdict"] == verdict[0][len("verdict: "):]


def test_compare_image_models_returns_a_dataclass(tmp_path: Path, tiny_clip_dir: Path) -> None:
    other = build_tiny_clip(tmp_path / "other", embed_dim=16, seed=1)
    rows = [["path", "label"]]
    for label, colour in {"red": (220, 20, 20), "blue": (20, 20, 220)}.items():
        for variant in range(3):
            Image.new("RGB", (40 + variant * 8, 30), colour).save(tmp_path / f"{label}{variant}.png")
            rows.append([f"{label}{variant}.png", label])
    data = write_csv(tmp_path / "images.csv", rows)
    result = compare_embedders(data, [f"clip:{tiny_clip_dir}", f"clip:{other}"], image_column="path",
                               label_column="label", device="cpu")
    assert isinstance(result, ComparisonResult) and result.modality == "image" and result.items == 6
    first, second = result.models
    assert (first.dimension, second.dimension) == (32, 16)
    for model in result.models:
        assert model.ms_per_item_batch > 0 and model.ms_per_item_single > 0 and model.peak_rss_delta_mb >= 0
        assert 0 <= model.top1 <= model.top5 <= 1
        assert model.discrimination == pytest.approx(model.same_label_cosine - model.other_label_cosine, abs=1e-5)
    assert result.verdict().count(";") <= 1 and "\n" not in result.verdict()


def test_compare_refuses_bad_requests_before_loading(labelled_texts: Path, tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    with pytest.raises(EmbtuneError, match="exactly one of --text-column and --image-column"):
        compare_embedders(labelled_texts, [str(tiny_model_dir)], label_column="label")
    one_label = write_csv(tmp_path / "one.csv", [["text", "label"], ["a", "x"], ["b", "x"]])
    with pytest.raises(DataError, match="needs at least two labels"):
        compare_embedders(one_label, [str(tiny_model_dir)], text_column="text", label_column="label")
    with pytest.raises(EmbtuneError, match="is a text model and the items are images"):
        Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
        images = write_csv(tmp_path / "img.csv", [["path", "label"], ["a.png", "x"], ["a.png", "x"],
                                                  ["a.png", "y"]])
        compare_embedders(images, [str(tiny_model_dir)], image_column="path", label_column="label")
