"""Embedding maps: projections of stored vectors, PNG/HTML output, the projection cache, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.collection import Collection
from core.errors import CollectionError, DataError
from core.maps import compute_map, write_map
from tests.conftest import write_csv


def clustered(folder: Path | None, n: int = 40, d: int = 16) -> Collection:
    """Three well separated clusters, labelled by a ``category`` field (and a numeric ``n``)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, d)) * 4
    labels = [i % 3 for i in range(n)]
    vectors = np.stack([centres[label] + rng.normal(scale=0.3, size=d) for label in labels]).astype(np.float32)
    collection = Collection(d)
    collection.add([f"id{i}" for i in range(n)], vectors, texts=[f"item number {i}" for i in range(n)],
                   metadata=[{"category": "abc"[label], "n": i} for i, label in enumerate(labels)])
    if folder is not None:
        collection.save(folder)
    return collection


def test_tsne_map_writes_png_and_html_and_keeps_clusters_apart(tmp_path: Path) -> None:
    collection = clustered(tmp_path / "c")
    emap = compute_map(collection, method="tsne")
    assert emap.coords.shape == (40, 2) and not emap.sampled and not emap.from_cache
    categories = np.array([m["category"] for m in emap.metadata])
    centroids = {c: emap.coords[categories == c].mean(axis=0) for c in "abc"}
    spread = max(np.linalg.norm(emap.coords[categories == c] - centroids[c], axis=1).mean() for c in "abc")
    gaps = [np.linalg.norm(centroids[a] - centroids[b]) for a, b in ("ab", "bc", "ac")]
    assert min(gaps) > 2 * spread  # the projection is of the real vectors, not noise
    png = write_map(emap, tmp_path / "map.png", color_by="category")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = write_map(emap, tmp_path / "map.html", color_by="category").read_text(encoding="utf-8")
    assert "vega" in html and "id17" in html and "item number 17" in html and '"category"' in html
    numeric = write_map(emap, tmp_path / "numeric.png", color_by="n")
    assert numeric.stat().st_size > 1000


def test_second_map_reuses_the_cached_projection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collection = clustered(tmp_path / "c")
    said: list[str] = []
    first = compute_map(collection, method="tsne", announce=said.append)
    assert Path(first.cache_file).is_file() and Path(first.cache_file).parent == tmp_path / "c"
    assert said == ["projecting the c map (TSNE, 40 points; cached afterwards)…"]  # a long wait is announced

    def forbidden(*_args, **_kwargs):
        raise AssertionError("the projection was computed again")

    monkeypatch.setattr("core.maps._project", forbidden)
    again = compute_map(Collection.load(tmp_path / "c"), method="tsne", announce=said.append)
    assert again.from_cache and again.ids == first.ids and len(said) == 1  # a cache read is not announced
    np.testing.assert_allclose(again.coords, first.coords, atol=1e-5)
    # A re-saved collection is a new generation: its map is projected again, the stale file removed.
    monkeypatch.undo()
    reloaded = Collection.load(tmp_path / "c")
    reloaded.delete(["id0"])
    reloaded.save(tmp_path / "c")
    fresh = compute_map(reloaded, method="tsne")
    assert not fresh.from_cache and len(fresh.ids) == 39
    assert not Path(first.cache_file).exists()


def test_large_collections_are_sampled_with_a_seed_and_say_so(tmp_path: Path) -> None:
    collection = clustered(None, n=60)
    emap = compute_map(collection, method="tsne", max_points=12, seed=3)
    again = compute_map(collection, method="tsne", max_points=12, seed=3)
    assert emap.sampled and len(emap.ids) == 12 and emap.total == 60
    assert emap.ids == again.ids
    assert emap.notes == ["sampled 12 of 60 points (seed 3); the cap is 12"]


def test_umap_map(tmp_path: Path) -> None:
    emap = compute_map(clustered(tmp_path / "c", n=30), method="umap")
    assert emap.coords.shape == (30, 2) and np.isfinite(emap.coords).all()


def test_bad_map_requests_are_one_line(tmp_path: Path) -> None:
    collection = clustered(tmp_path / "c")
    emap = compute_map(collection, method="tsne")
    with pytest.raises(DataError, match=r"field 'colour' is not in .* \(fields: category, n\)"):
        write_map(emap, tmp_path / "m.png", color_by="colour")
    small = Collection(4)
    small.add(["a", "b", "c"], np.eye(3, 4, dtype=np.float32))
    with pytest.raises(CollectionError, match="has 3 items: a map needs at least 5"):
        compute_map(small, method="tsne")


@pytest.fixture()
def shop(run_cli, tmp_path: Path, tiny_model_dir: Path) -> str:
    rows = [["id", "name", "category"]] + [[str(i), f"{word} {i}", word] for i, word in
                                           enumerate(["chimney", "pipe", "drill", "garden", "hose", "paint"] * 2)]
    items = write_csv(tmp_path / "items.csv", rows)
    result = run_cli("index", str(items), "--collection", "shop", "--text-column", "name", "--id-column", "id",
                     "--model", str(tiny_model_dir))
    assert result.code == 0, result.err
    return "shop"


def test_map_cli_writes_files_and_reuses_the_projection(shop: str, run_cli, tmp_path: Path) -> None:
    first = run_cli("map", shop, "--method", "tsne", "--color-by", "category", "--out", str(tmp_path / "m.png"))
    assert first.code == 0, first.err
    assert "map of 12 points (tsne" in first.out and "cached" not in first.out
    second = run_cli("map", shop, "--method", "tsne", "--color-by", "category", "--out", str(tmp_path / "m.html"))
    assert second.code == 0, second.err
    assert "cached projection" in second.out
    assert (tmp_path / "m.png").stat().st_size > 1000 and "vega" in (tmp_path / "m.html").read_text()


def test_map_cli_bad_input_is_one_error_line(shop: str, run_cli, tmp_path: Path) -> None:
    unknown = run_cli("map", shop, "--method", "tsne", "--color-by", "colour", "--out", str(tmp_path / "m.png"))
    assert unknown.code == 1
    assert unknown.err.strip() == "error: field 'colour' is not in collection 'shop' (fields: category)"
    method = run_cli("map", shop, "--method", "pca", "--out", str(tmp_path / "m.png"))
    assert method.code == 1 and method.err.strip() == "error: map method 'pca' is unknown: use umap or tsne"
    suffix = run_cli("map", shop, "--method", "tsne", "--out", str(tmp_path / "m.svg"))
    assert suffix.code == 1 and "must end in .png or .html" in suffix.err
    missing = run_cli("map", "nope", "--method", "tsne", "--out", str(tmp_path / "m.png"))
    assert missing.code == 1 and "collection 'nope' does not exist" in missing.err
    assert not (tmp_path / "m.png").exists()


def test_twenty_five_categories_get_twenty_five_different_marks() -> None:
    from webapp.charts import category_encoding, category_style

    categories = [f"category {i:02d}" for i in range(25)]
    style = category_style(categories * 3)  # repeated values: one style each
    assert len(style) == 25 and len(set(style.values())) == 25
    encoding = category_encoding("category", categories)
    assert {"color", "shape"} <= set(encoding)  # past ten categories the shape carries the difference too
    assert set(category_encoding("category", categories[:10])) == {"color"}
