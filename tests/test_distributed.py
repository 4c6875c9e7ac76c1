"""Large collections: IVF-PQ with exact re-ranking, collections built from shards, and Ray Data indexing.

The Ray tests start one real local runtime for the module (2 CPUs, never mocked) and index a small
sharded corpus with a tiny model; each pipeline run costs a few seconds of actor start-up. One test starts a
two-node cluster with `ray start`, as README says, and indexes on it from a driver process of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.collection import Collection, index_bytes_per_vector, resolve_index_kind, save_streamed
from core.errors import CollectionError, DataError, EmbtuneError

# -- index kinds for large collections -----------------------------------------------------------


def clustered(count: int, dimension: int, seed: int, stream: int) -> np.ndarray:
    """Unit vectors around 50 shared centres (real embeddings cluster too; pure noise has no neighbours)."""
    centres = np.random.default_rng(seed).standard_normal((50, dimension)).astype(np.float32)
    draw = np.random.default_rng([seed, stream])
    points = centres[draw.integers(0, 50, count)] + 0.6 * draw.standard_normal((count, dimension)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def recall_at_10(collection: Collection, base: np.ndarray, queries: np.ndarray) -> float:
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    hits = collection.search_many(queries, 10)
    return float(np.mean([len({int(h.id) for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth,
                                                                                                  strict=True)]))


def test_auto_above_the_hnsw_limit_keeps_a_compact_index_that_still_finds_the_neighbours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size where a graph of float vectors stops fitting (lowered here to 10,000 items), ``auto``
    must hold a few bytes per vector in memory and still return the true neighbours; below it, exact search."""
    import core.collection.policy as policy

    base, queries = clustered(12_000, 32, seed=3, stream=1), clustered(100, 32, seed=3, stream=2)
    ids = [str(i) for i in range(len(base))]
    small = Collection(32)
    small.add(ids[:2_000], base[:2_000])
    truth = np.argsort(-(queries @ base[:2_000].T), axis=1)[:, :10]
    assert [[int(h.id) for h in row] for row in small.search_many(queries, 10)] == truth.tolist()

    monkeypatch.setattr(policy, "AUTO_FLAT_MAX_ITEMS", 5_000)
    monkeypatch.setattr(policy, "AUTO_HNSW_MAX_ITEMS", 10_000)
    large = Collection(32)
    large.add(ids, base)
    assert recall_at_10(large, base, queries) >= 0.85
    float_bytes = 32 * 4
    assert index_bytes_per_vector(large._index) < float_bytes / 4  # codes, not the vectors themselves
    assert resolve_index_kind("auto", 10_001, 384)[0] != resolve_index_kind("auto", 10_000, 384)[0]


def test_refine_factory_string_gets_k_factor_and_nprobe() -> None:
    assert resolve_index_kind("IVF64,PQ8,RFlat", 5_000, 32) == ("IVF64,PQ8,RFlat", {"nprobe": 8, "k_factor": 8})
    assert resolve_index_kind("IVF1024,Flat", 100_000, 32)[1] == {"nprobe": 128}
    assert resolve_index_kind("HNSW16", 100, 32) == ("HNSW16", {})


def test_reranking_restores_the_recall_that_pq_codes_lose() -> None:
    base, queries = clustered(12_000, 32, seed=0, stream=1), clustered(100, 32, seed=0, stream=2)
    ids = [str(i) for i in range(len(base))]
    reranked = Collection(32, index_kind="ivfpq")
    reranked.add(ids, base)
    codes_only = Collection(32, index_kind="IVF256,PQ4")  # the same codes without the exact second stage
    codes_only.add(ids, base)
    refined_in_faiss = Collection(32, index_kind="IVF256,PQ4,RFlat")
    refined_in_faiss.add(ids, base)

    with_rerank, without = recall_at_10(reranked, base, queries), recall_at_10(codes_only, base, queries)
    assert reranked.info.index_factory == "IVF307,PQ4" and reranked.info.search_params["refine_k_factor"] == 8
    # (4 codes for 32 dimensions is coarse; real 384-d embeddings with PQ48 reach ~0.99, docs/benchmarks.md)
    assert with_rerank >= 0.85 and with_rerank > without + 0.3, (with_rerank, without)
    assert recall_at_10(refined_in_faiss, base, queries) >= 0.85
    hit = reranked.search(queries[0], 3)[0]  # re-ranked scores are exact cosines
    assert hit.score == pytest.approx(float(base[int(hit.id)] @ queries[0]), abs=1e-5)
    # The index keeps PQ codes + ids (4 + 8 bytes here) and its codebooks; RFlat adds the 128-byte vectors.
    assert index_bytes_per_vector(reranked._index) < 32 and index_bytes_per_vector(refined_in_faiss._index) > 128


def test_filtered_search_on_a_reranked_index_keeps_only_allowed_items() -> None:
    base = clustered(12_000, 32, seed=1, stream=1)
    collection = Collection(32, index_kind="ivfpq")
    collection.add([str(i) for i in range(len(base))], base,
                   metadata=[{"half": "even" if i % 2 == 0 else "odd"} for i in range(len(base))])
    hits = collection.search(base[7], 5, filter={"half": "odd"})
    assert hits[0].id == "7" and len(hits) == 5 and all(int(h.id) % 2 for h in hits)


def streamed_batches(base: np.ndarray, size: int):
    def batches():
        for start in range(0, len(base), size):
            rows = range(start, min(len(base), start + size))
            yield [f"id{i}" for i in rows], base[start:start + size], [f"text {i}" for i in rows], \
                [{"n": str(i)} for i in rows]
    return batches


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_streamed_build_equals_the_in_memory_collection(tmp_path: Path, kind: str) -> None:
    base = clustered(11_000, 32, seed=2, stream=1)
    info = save_streamed(tmp_path / "streamed", streamed_batches(base, 3_000), count=len(base), dimension=32,
                         index_kind=kind, model_id="m")
    built = Collection(32, index_kind=kind)
    built.add([f"id{i}" for i in range(len(base))], base, texts=[f"text {i}" for i in range(len(base))],
              metadata=[{"n": str(i)} for i in range(len(base))])

    loaded = Collection.load(tmp_path / "streamed")
    assert loaded.ids == built.ids and info.generation == 1 and info.index_factory == loaded.info.index_factory
    np.testing.assert_allclose(loaded.vectors, built.vectors, atol=1e-6)
    assert loaded.item("id42") == {"id": "id42", "text": "text 42", "metadata": {"n": "42"}}
    assert loaded._index is not None and not loaded._index_stale  # the saved index is used as it is
    assert [h.id for h in loaded.search(base[42], 3)] == [h.id for h in built.search(base[42], 3)]


def test_streamed_build_refuses_duplicate_ids_and_a_wrong_count_without_committing(tmp_path: Path) -> None:
    base = clustered(100, 8, seed=3, stream=1)

    def doubled():
        yield [f"id{i}" for i in range(50)], base[:50], [None] * 50, [{}] * 50
        yield [f"id{i}" for i in range(49, 99)], base[50:], [None] * 50, [{}] * 50

    with pytest.raises(CollectionError, match=r"id 'id49' appears twice: shard A row 50 and shard A row 51"):
        save_streamed(tmp_path, doubled, count=100, dimension=8, describe_position=lambda p: f"shard A row {p + 1}")
    with pytest.raises(CollectionError, match="held 100 items, 120 were announced"):
        save_streamed(tmp_path, streamed_batches(base, 30), count=120, dimension=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written, no manifest


def test_large_collection_maps_its_vectors_and_stays_writable(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import core.collection.disk

    base = clustered(200, 8, seed=4, stream=1)
    original = Collection(8)
    original.add([str(i) for i in range(200)], base)
    original.save(tmp_path)
    monkeypatch.setattr(core.collection.disk, "MMAP_VECTORS_MIN_BYTES", 0)
    loaded = Collection.load(tmp_path)
    assert isinstance(loaded._vectors.base, np.memmap) or isinstance(loaded._vectors, np.memmap)
    loaded.upsert(["3"], base[4])  # copy-on-write: the file under the map is not changed
    loaded.save(tmp_path)
    again = Collection.load(tmp_path)
    np.testing.assert_allclose(again.vectors[3], base[4], atol=1e-6)


# -- Ray Data ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_runtime():
    """One real local Ray runtime for the module, its files in a temporary folder of ours."""
    import logging

    import ray

    temp_dir = tempfile.mkdtemp(prefix="embtune-ray-", dir="/tmp")  # short: Ray's socket paths have a limit
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


CORPUS_ROWS = 240


def corpus_frame() -> pd.DataFrame:
    words = ["garden", "hose", "drill", "paint", "chimney", "pipe", "труба", "дымоход"]
    rows = [{"sku": f"sku-{i:04d}", "title": " ".join(words[(i + j) % len(words)] for j in range(1 + i % 6)),
             "category": f"cat{i % 5}", "price": f"{i * 1.5:.2f}"} for i in range(CORPUS_ROWS)]
    return pd.DataFrame(rows)


@pytest.fixture()
def sharded_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """The corpus as one CSV, and as 4 shards of 60 rows in the three formats."""
    frame = corpus_frame()
    whole = tmp_path / "all.csv"
    frame.to_csv(whole, index=False)
    folder = tmp_path / "shards"
    folder.mkdir()
    for number, start in enumerate(range(0, CORPUS_ROWS, 60)):
        part = frame.iloc[start:start + 60]
        if number == 1:
            part.to_json(folder / f"s{number}.jsonl", orient="records", lines=True, force_ascii=False)
        elif number == 2:
            part.to_parquet(folder / f"s{number}.parquet", index=False)
        else:
            part.to_csv(folder / f"s{number}.csv", index=False)
    return whole, folder


def open_db(workspace_dir: Path):
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open(workspace_dir)
    return workspace, Database(workspace.db_url())


def dying_actor(marker: Path) -> type:
    """An embedding actor whose process kills itself (SIGKILL) on its second batch, once per test."""
    from core.collection.ray_shards import EmbedActor

    class DiesOnce(EmbedActor):
        calls = 0

        def __call__(self, batch):
            self.calls += 1
            if self.calls == 2 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    return DiesOnce


def test_killed_worker_is_replaced_and_nothing_is_lost_or_doubled(ray_runtime, workspace_dir: Path, tmp_path: Path,
                                                                  sharded_corpus, tiny_model_dir: Path) -> None:
    from core.collection.ray_index import index_with_ray

    _, folder = sharded_corpus
    workspace, db = open_db(workspace_dir)
    marker = tmp_path / "killed"
    report = index_with_ray(folder, collection="c", text_column="title", id_column="sku", workspace=workspace, db=db,
                            model=str(tiny_model_dir), workers=2, batch_rows=16, actor_class=dying_actor(marker))
    assert marker.exists(), "no actor reached its second batch: the test did not kill anything"
    collection = Collection.load(report.path)
    assert collection.ids == corpus_frame()["sku"].tolist()  # every row once, in input order


def test_run_that_dies_after_k_shards_resumes_there_without_duplicates(ray_runtime, run_cli, workspace_dir: Path,
                                                                       sharded_corpus, tiny_model_dir: Path) -> None:
    from core.collection.ray_index import index_with_ray

    _, folder = sharded_corpus
    workspace, db = open_db(workspace_dir)
    parts = workspace.collection_dir("c") / "shards"

    class DriverDied(Exception):
        pass

    def die_after_two(progress) -> None:
        if progress.message.startswith("2 of 4"):
            raise DriverDied  # the driver stops right after its 2nd part: what a crash or Ctrl-C leaves behind

    with pytest.raises(DriverDied):
        index_with_ray(folder, collection="c", text_column="title", workspace=workspace, db=db,
                       model=str(tiny_model_dir), workers=2, batch_rows=16, progress=die_after_two)
    done = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert len(done) == 2 and not (workspace.collection_dir("c") / "manifest.json").exists()

    # The same command again, from the CLI: it embeds the two missing shards only.
    again = run_cli("index", str(folder), "--collection", "c", "--text-column", "title", "--model",
                    str(tiny_model_dir), "--engine", "ray", "--workers", "2")
    assert again.code == 0 and f"indexed {CORPUS_ROWS} items into 'c'" in again.out, again.err
    assert {name: (parts / name).stat().st_mtime_ns for name in done} == done  # not embedded again
    assert len(list(parts.iterdir())) == 4
    collection = Collection.load(workspace.collection_dir("c"))
    shard_names = sorted(p.name for p in folder.iterdir())
    assert collection.ids == [f"{name}:{row}" for name in shard_names for row in range(1, 61)]
    assert len(set(collection.ids)) == CORPUS_ROWS


def test_bad_row_inside_a_shard_is_one_line_naming_shard_and_row(ray_runtime, workspace_dir: Path, tmp_path: Path,
                                                                 tiny_model_dir: Path) -> None:
    from core.collection.ray_index import index_with_ray

    folder = tmp_path / "bad"
    folder.mkdir()
    corpus_frame().iloc[:10].to_csv(folder / "a.csv", index=False)
    broken = corpus_frame().iloc[10:20].copy()
    broken.iloc[3, broken.columns.get_loc("title")] = "  "
    broken.to_csv(folder / "b.csv", index=False)
    workspace, db = open_db(workspace_dir)
    with pytest.raises(DataError, match=r"b\.csv: row 4 \(id 'sku-0013'\): column 'title' is empty"):
        index_with_ray(folder, collection="bad", text_column="title", id_column="sku", workspace=workspace, db=db,
                       model=str(tiny_model_dir), workers=1)


def test_shard_without_the_text_column_names_shard_and_column(run_cli, sharded_corpus, tmp_path: Path) -> None:
    _, folder = sharded_corpus
    pd.DataFrame({"name": ["a"], "sku": ["x"]}).to_parquet(folder / "s9.parquet")
    result = run_cli("index", str(folder), "--collection", "c", "--text-column", "title", "--engine", "ray")
    assert result.code == 1
    assert result.err.strip().count("\n") == 0
    assert "s9.parquet: no column 'title' (columns are: name, sku)" in result.err


def test_engine_ray_without_the_extra_says_how_to_install_it(run_cli, sharded_corpus,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _, folder = sharded_corpus
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without embtune[ray] looks like
    result = run_cli("index", str(folder), "--collection", "c", "--text-column", "title", "--engine", "ray")
    assert result.code == 1 and result.err.strip().count("\n") == 0
    assert "pip install 'embtune[ray]'" in result.err


def test_unreachable_ray_address_is_one_line(run_cli, sharded_corpus) -> None:
    _, folder = sharded_corpus
    result = run_cli("index", str(folder), "--collection", "c", "--text-column", "title", "--engine", "ray",
                     "--ray-address", "127.0.0.1:9")
    assert result.code == 1 and result.err.strip().count("\n") == 0
    assert "the Ray cluster at 127.0.0.1:9 is not reachable" in result.err


def test_local_engine_refuses_a_folder_and_an_unknown_engine(run_cli, sharded_corpus) -> None:
    _, folder = sharded_corpus
    result = run_cli("index", str(folder), "--collection", "c", "--text-column", "title")
    assert result.code == 1 and "is a folder: index a folder of shards with --engine ray" in result.err
    result = run_cli("index", str(folder), "--collection", "c", "--text-column", "title", "--engine", "spark")
    assert result.code == 1 and "engine 'spark' is not known" in result.err


def test_stale_part_is_embedded_again(tmp_path: Path) -> None:
    from core.collection.ray_index import _part_is_current, _part_record
    from core.collection.ray_shards import Shard

    source = tmp_path / "a.csv"
    source.write_text("t\nx\n")
    shard = Shard.of(0, source)
    record = _part_record(shard, text_column="t", id_column=None, name_rows=False, fingerprint="f1")
    assert record != _part_record(shard, text_column="t", id_column=None, name_rows=False, fingerprint="f2")
    source.write_text("t\nchanged\n")
    assert _part_record(Shard.of(0, source), text_column="t", id_column=None, name_rows=False,
                        fingerprint="f1") != record
    assert not _part_is_current(tmp_path / "part-00000.parquet", record)
    with pytest.raises(EmbtuneError, match="must look like HOST:PORT"):
        from core.collection.ray_shards import ray_runtime

        with ray_runtime("no-port"):
            pass
    assert json.loads(record)["source"] == str(source.resolve())


# -- a two-node cluster, started the way README says ------------------------------------------------

CLUSTER_DRIVER = """
import sys
import time
from pathlib import Path

import ray

from core.collection.ray_index import index_with_ray
from core.collection.ray_shards import EmbedActor
from storage.db import Database
from storage.workspace import Workspace

folder, workspace_dir, model, address, seen = sys.argv[1:6]


class RecordsItsNode(EmbedActor):
    def __init__(self, *args, **kwargs):
        Path(seen, "started-on-" + ray.get_runtime_context().get_node_id()).touch()
        super().__init__(*args, **kwargs)

    def __call__(self, batch):
        mine = Path(seen, "embedded-on-" + ray.get_runtime_context().get_node_id())
        # A tiny model is fast: on a busy machine the first actor used to take every batch before the other one
        # was ready. After its first batch an actor waits until the other node has embedded one too (bounded: a
        # node that never does fails the test's own check); the tasks it holds meanwhile leave the rest to the other.
        if mine.exists():
            deadline = time.monotonic() + 120
            while not [p for p in Path(seen).glob("embedded-on-*") if p != mine] and time.monotonic() < deadline:
                time.sleep(0.05)
        mine.touch()
        return super().__call__(batch)


workspace = Workspace.open(Path(workspace_dir))
report = index_with_ray(Path(folder), collection="cluster", text_column="title", id_column="sku",
                        workspace=workspace, db=Database(workspace.db_url()), model=model, workers=2,
                        batch_rows=16, ray_address=address, actor_class=RecordsItsNode)
print(report.count, report.path)
"""


def stop_ray_processes_under(folder: Path) -> None:
    """Kill the processes of the cluster whose files are in ``folder`` (``ray stop`` would stop every Ray here)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(str(folder) in part for part in process.info["cmdline"] or []):
                process.kill()


def test_two_node_cluster_from_ray_start_embeds_on_both_nodes_and_equals_the_single_process_index(
        run_cli, workspace_dir: Path, tmp_path: Path, sharded_corpus, tiny_model_dir: Path) -> None:
    """README's recipe on one machine: `ray start` twice (one CPU per node), a token, a driver of its own.

    Each actor needs 0.9 CPU, so the two actors cannot share a node; the driver records where they ran.
    """
    import subprocess

    from tests.conftest import free_port

    whole, folder = sharded_corpus
    ray_cli = str(Path(sys.executable).parent / "ray")
    temp_dir = Path(tempfile.mkdtemp(prefix="embtune-2n-", dir="/tmp"))  # short: Ray's socket paths have a limit
    # README's token step; a home of the test's own, so that ~/.ray/auth_token is not the user's.
    env = {**os.environ, "HOME": str(tmp_path / "home"), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    generated = subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                               timeout=60)
    assert generated.returncode == 0 and (tmp_path / "home" / ".ray" / "auth_token").is_file(), generated.stderr
    address = f"127.0.0.1:{free_port()}"
    seen = tmp_path / "nodes"
    seen.mkdir()
    try:
        head = subprocess.run([ray_cli, "start", "--head", f"--port={address.split(':')[1]}", "--num-cpus=1",
                               "--node-ip-address=127.0.0.1", "--include-dashboard=false", f"--temp-dir={temp_dir}"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, head.stderr[-2000:]
        second = subprocess.run([ray_cli, "start", f"--address={address}", "--num-cpus=1",
                                 "--node-ip-address=127.0.0.1"], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr[-2000:]
        driver = subprocess.run([sys.executable, "-c", CLUSTER_DRIVER, str(folder), str(workspace_dir),
                                 str(tiny_model_dir), address, str(seen)], env=env, capture_output=True, text=True,
                                timeout=240, cwd=Path(__file__).resolve().parents[1])
        assert driver.returncode == 0, driver.stderr[-3000:]
    finally:
        stop_ray_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    marks = {p.name for p in seen.iterdir()}
    started = {name.removeprefix("started-on-") for name in marks if name.startswith("started-on-")}
    embedded = {name.removeprefix("embedded-on-") for name in marks if name.startswith("embedded-on-")}
    assert len(started) == 2, "the two actors did not start on two nodes"
    assert embedded == started, "one of the nodes embedded nothing"
    count, path = driver.stdout.split()[-2:]
    assert int(count) == CORPUS_ROWS
    local = run_cli("index", str(whole), "--collection", "local", "--text-column", "title", "--id-column", "sku",
                    "--model", str(tiny_model_dir))
    assert local.code == 0, local.err
    workspace, db = open_db(workspace_dir)
    single = Collection.load(workspace.collection_dir("local"))
    sharded = Collection.load(Path(path))
    assert sharded.ids == single.ids
    np.testing.assert_allclose(sharded.vectors, single.vectors, atol=1e-5)
    assert [sharded.item(i) for i in sharded.ids] == [single.item(i) for i in single.ids]
    assert sharded.info.model_fingerprint == single.info.model_fingerprint
    assert db.get_collection("cluster").item_count == CORPUS_ROWS
    found = run_cli("search", "cluster", "garden hose", "-k", "3")
    assert found.code == 0 and found.out == run_cli("search", "local", "garden hose", "-k", "3").out
    parts = sorted(p.name for p in (workspace.collection_dir("cluster") / "shards").iterdir())
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]
