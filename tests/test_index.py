"""Collections: FAISS index + items, search, persistence, kill-safety, model changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.collection import Collection, resolve_index_kind
from core.collection.policy import AUTO_FLAT_MAX_ITEMS, HNSW_EF_SEARCH, HNSW_EF_SEARCH_LARGE, HNSW_LARGE_FROM_ITEMS
from core.embedders import load_embedder
from core.errors import CollectionError, DimensionMismatchError, StorageError


def unit_vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def filled(n: int = 200, d: int = 16, kind: str = "flat") -> tuple[Collection, np.ndarray]:
    vectors = unit_vectors(n, d)
    collection = Collection(d, index_kind=kind)
    collection.add([f"id{i}" for i in range(n)], vectors, texts=[f"text {i}" for i in range(n)],
                   metadata=[{"group": "even" if i % 2 == 0 else "odd", "n": i} for i in range(n)])
    return collection, vectors


def test_search_by_vector_returns_id_cosine_and_metadata() -> None:
    collection, vectors = filled()
    hits = collection.search(vectors[7], k=3)
    assert hits[0].id == "id7"
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata == {"group": "odd", "n": 7}
    assert hits[0].to_dict() == {"id": "id7", "score": hits[0].score, "text": "text 7",
                                 "metadata": {"group": "odd", "n": 7}}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "hnsw_sq", "ivf", "IVF8,Flat", "HNSW16", "auto"])
def test_every_index_kind_finds_exact_matches(kind: str) -> None:
    collection, vectors = filled(n=2000, kind=kind)
    found = sum(collection.search(vectors[i], k=1)[0].id == f"id{i}" for i in range(0, 2000, 100))
    assert found >= 19


def test_auto_kind_switches_from_flat_by_size() -> None:
    assert resolve_index_kind("auto", 1000, 384)[0] == "Flat"
    assert resolve_index_kind("auto", AUTO_FLAT_MAX_ITEMS + 1, 384)[0].startswith("HNSW")


def test_large_hnsw_graphs_search_with_the_smaller_ef_that_keeps_one_query_under_a_millisecond() -> None:
    # docs/benchmarks.md, search.py at 1M: efSearch 96 took 1.10 ms per query, 80 0.93 ms (recall@10 0.971).
    assert resolve_index_kind("auto", 100_000, 384)[1]["efSearch"] == HNSW_EF_SEARCH
    assert resolve_index_kind("hnsw", HNSW_LARGE_FROM_ITEMS - 1, 384)[1]["efSearch"] == HNSW_EF_SEARCH
    assert resolve_index_kind("hnsw", 1_000_000, 384)[1]["efSearch"] == HNSW_EF_SEARCH_LARGE < HNSW_EF_SEARCH


def test_auto_on_a_large_collection_answers_with_exact_scores_from_compact_codes(monkeypatch) -> None:
    # From HNSW_LARGE_FROM_ITEMS, auto walks a graph over fp16 codes and re-ranks from the float vectors: the
    # scores a user sees must be the exact cosines (fp16 distances alone differ by ~1e-4), the order exact search's.
    import core.collection.policy as policy

    monkeypatch.setattr(policy, "AUTO_FLAT_MAX_ITEMS", 100)
    monkeypatch.setattr(policy, "HNSW_LARGE_FROM_ITEMS", 1000)
    collection, vectors = filled(n=3000, d=64, kind="auto")
    queries = unit_vectors(50, d=64, seed=7)
    hits = collection.search_many(queries, 10)
    assert collection.stats()["index_factory"] == "HNSW32,SQfp16"
    exact = queries @ vectors.T
    for query, row in zip(exact, hits, strict=True):
        assert all(abs(hit.score - query[int(hit.id[2:])]) < 1e-6 for hit in row)
    top = np.argsort(-exact, axis=1)[:, :10]
    recall = np.mean([len({int(h.id[2:]) for h in row} & set(t.tolist())) / 10
                      for row, t in zip(hits, top, strict=True)])
    assert recall >= 0.95


def test_unknown_index_kind_is_refused_with_the_choices() -> None:
    with pytest.raises(CollectionError, match="neither auto/flat/hnsw/ivf nor a faiss factory string"):
        resolve_index_kind("banana", 10, 16)


def test_upsert_replaces_and_delete_removes() -> None:
    collection, vectors = filled(n=50)
    replacement = unit_vectors(1, seed=99)
    collection.upsert(["id3", "new"], np.vstack([replacement, vectors[3]]), texts=["three", "new one"],
                      metadata=[{"group": "x"}, {"group": "y"}])
    assert len(collection) == 51
    assert collection.search(replacement[0], k=1)[0].id == "id3"
    assert collection.item("id3")["text"] == "three"
    assert collection.delete(["id3", "missing"]) == 1
    assert "id3" not in collection and len(collection) == 50
    assert all(hit.id != "id3" for hit in collection.search(replacement[0], k=50))


def test_delete_works_for_index_kinds_that_cannot_remove() -> None:
    collection, vectors = filled(n=300, kind="hnsw")
    collection.search(vectors[0], k=1)  # build the index first
    collection.delete(["id0"])
    assert collection.search(vectors[0], k=1)[0].id != "id0"


def test_add_refuses_existing_ids_and_duplicates_in_a_batch() -> None:
    collection, vectors = filled(n=5)
    with pytest.raises(CollectionError, match="'id1' is already in the collection"):
        collection.add(["id1"], vectors[:1])
    with pytest.raises(CollectionError, match="'dup' appears twice"):
        collection.upsert(["dup", "dup"], vectors[:2])


def test_filter_by_metadata_value_and_callable() -> None:
    collection, vectors = filled(n=200)
    hits = collection.search(vectors[4], k=5, filter={"group": "odd"})
    assert len(hits) == 5 and all(h.metadata["group"] == "odd" for h in hits)
    hits = collection.search(vectors[4], k=3, filter=lambda meta: meta["n"] < 3)
    assert sorted(h.id for h in hits) == ["id0", "id1", "id2"]
    assert collection.search(vectors[4], k=3, filter={"group": "none"}) == []


def test_broad_filter_on_approximate_index_still_returns_k() -> None:
    collection, vectors = filled(n=3000, kind="hnsw")
    import core.collection.search as search_module

    original = search_module.EXACT_FILTER_MAX_ITEMS
    search_module.EXACT_FILTER_MAX_ITEMS = 10  # force the index's ID-selector path
    try:
        hits = collection.search(vectors[1], k=10, filter={"group": "even"})
    finally:
        search_module.EXACT_FILTER_MAX_ITEMS = original
    assert len(hits) == 10 and all(h.metadata["group"] == "even" for h in hits)


def test_k_must_be_positive() -> None:
    collection, vectors = filled(n=5)
    for bad in (0, -3):
        with pytest.raises(CollectionError, match="k must be a positive"):
            collection.search(vectors[0], k=bad)


def test_dimension_mismatch_on_add_is_refused() -> None:
    collection, _ = filled(n=5, d=16)
    with pytest.raises(DimensionMismatchError, match="dimension 8 but the collection was built with 16"):
        collection.add(["x"], unit_vectors(1, d=8))


def test_save_and_load_reproduce_identical_results(tmp_path: Path) -> None:
    for kind in ("flat", "hnsw", "ivf"):
        collection, vectors = filled(n=1500, kind=kind)
        before = collection.search_many(vectors[:20], k=5)
        collection.save(tmp_path / kind)
        loaded = Collection.load(tmp_path / kind)
        assert loaded.ids == collection.ids
        assert loaded.search_many(vectors[:20], k=5) == before
        assert loaded.stats()["index_factory"] == collection.stats()["index_factory"]
        manifest = json.loads((tmp_path / kind / "manifest.json").read_text())
        assert set(manifest["files"]) == {"index", "vectors", "items"}
        assert not any(p.suffix == ".pkl" for p in (tmp_path / kind).iterdir())


def test_saving_again_keeps_only_the_new_generation(tmp_path: Path) -> None:
    collection, _vectors = filled(n=20)
    collection.save(tmp_path / "c")
    collection.delete(["id0"])
    collection.save(tmp_path / "c")
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == ["index-2.faiss", "items-2.jsonl", "manifest.json", "vectors-2.npy"]
    assert len(Collection.load(tmp_path / "c")) == 19


def test_failure_during_save_leaves_previous_collection_loadable(tmp_path: Path, monkeypatch) -> None:
    collection, vectors = filled(n=100)
    collection.save(tmp_path / "c")
    collection.delete([f"id{i}" for i in range(50)])

    import core.collection.disk as disk_module

    def exploding_dump(*_args, **_kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(disk_module.json, "dumps", exploding_dump)  # fails while writing items
    with pytest.raises(StorageError, match=r"cannot write collection .*: disk full \(injected\)"):
        collection.save(tmp_path / "c")
    monkeypatch.undo()
    assert sorted(f.name for f in (tmp_path / "c").iterdir()) == ["index-1.faiss", "items-1.jsonl", "manifest.json",
                                                                   "vectors-1.npy"]  # nothing of the failed one
    loaded = Collection.load(tmp_path / "c")
    assert len(loaded) == 100
    assert loaded.search(vectors[0], k=1)[0].id == "id0"


def test_process_killed_during_save_leaves_previous_collection_loadable(tmp_path: Path) -> None:
    collection, vectors = filled(n=300)
    collection.save(tmp_path / "c")
    script = textwrap.dedent(f"""
        import os, numpy as np
        import core.collection.memory as memory_module
        from core.collection import Collection
        collection = Collection.load({str(tmp_path / "c")!r})
        collection.delete(collection.ids[:100])
        real_save = np.save
        def die_mid_write(handle, array, **kwargs):
            handle.write(b"partial")
            handle.flush()
            os._exit(9)  # the process dies with a half-written file on disk
        memory_module.np.save = die_mid_write
        collection.save({str(tmp_path / "c")!r})
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1],
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 9
    loaded = Collection.load(tmp_path / "c")
    assert len(loaded) == 300
    assert loaded.search(vectors[5], k=1)[0].id == "id5"
    collection.save(tmp_path / "c")  # the next save cleans the debris
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]


def test_corrupted_index_file_is_detected(tmp_path: Path) -> None:
    collection, _ = filled(n=50)
    collection.save(tmp_path / "c")
    index_file = next((tmp_path / "c").glob("index-*.faiss"))
    data = bytearray(index_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(CollectionError, match=r"index-1\.faiss is corrupted"):
        Collection.load(tmp_path / "c")


def test_missing_collection_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="holds no collection"):
        Collection.load(tmp_path / "nothing")


def test_text_search_and_rebuild_for_another_model(tiny_model_dir: Path, tiny_model_dir_48: Path,
                                                   tmp_path: Path) -> None:
    small = load_embedder(str(tiny_model_dir), device="cpu")
    other = load_embedder(str(tiny_model_dir_48), device="cpu")
    texts = ["chimney pipe", "garden hose", "paint", "drill"]
    collection = Collection.from_items(["a", "b", "c", "d"], texts, small)
    assert collection.search("garden hose", k=1)[0].id == "b"
    collection.save(tmp_path / "c")
    with pytest.raises(DimensionMismatchError, match=r"32-d.*48-d vectors"):
        Collection.load(tmp_path / "c", embedder=other)
    loaded = Collection.load(tmp_path / "c")
    assert loaded.rebuild_if_needed(other) is True
    assert loaded.dimension == 48 and loaded.info.model_fingerprint == other.fingerprint
    assert loaded.search("garden hose", k=1)[0].id == "b"
    assert loaded.rebuild_if_needed(other) is False
    loaded.save(tmp_path / "c")
    assert Collection.load(tmp_path / "c", embedder=other).dimension == 48


def test_metadata_is_stored_as_json(tmp_path: Path) -> None:
    collection = Collection(4)
    collection.add(["a"], np.eye(4, dtype=np.float32)[:1],
                   metadata=[{"price": np.float32(2.5), "missing": float("nan"), "tags": ("x", "y")}])
    collection.save(tmp_path / "c")
    items = next((tmp_path / "c").glob("items-*.jsonl")).read_text()
    assert json.loads(items)["metadata"] == {"price": 2.5, "missing": None, "tags": ["x", "y"]}


def test_stats_report_count_kind_and_sizes(tmp_path: Path) -> None:
    collection, _ = filled(n=30)
    collection.save(tmp_path / "c")
    stats = collection.stats()
    assert stats["count"] == 30 and stats["dimension"] == 16 and stats["index_factory"] == "Flat"
    assert stats["vector_bytes"] == 30 * 16 * 4 and stats["bytes_on_disk"] > 0
