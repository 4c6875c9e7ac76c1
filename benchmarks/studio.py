"""Studio server-side latency on a 100k-item collection with the bundled model, vs the plain libraries.

What the studio issue asks: Data-page search and Label-page "next candidates" ≤ 300 ms server time
once the model is cached, and the Map page's second open ≤ 1 s. Three ways each are timed:

* ``page`` — the page script itself run by Streamlit's AppTest (the whole server-side rerun a
  browser triggers: widgets, cached model and collection, the core call, building the tables/chart);
* ``core`` — the one core call the page makes (``Collection.search``, ``propose_candidates``,
  ``compute_map``);
* ``plain`` — the plain libraries doing the same work: sentence-transformers ``encode`` + the same
  faiss index's ``search`` (and a re-rank by distance to the median for candidates); for the map,
  umap-learn projecting the same 20 000-point sample again (what a page without the cache does).

The collection: the bundled catalogue's 434 product names embedded by the bundled MiniLM, each
vector repeated with small Gaussian noise (σ 0.02, renormalised) to 100 000 items with texts
"NAME #i" — encoding 100k real texts would take ~40 minutes on 2 cores, and what is timed (query
encoding + index search + item look-up) does not depend on where the stored vectors came from.
``auto`` picks the index kind as for any 100k collection. Run::

    nice -n 19 .venv/bin/python benchmarks/studio.py [--items 100000] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from benchmarks._common import cpu_report, cpu_snapshot, latencies_ms, machine_line

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "webapp" / "pages"
QUERIES = ["дымо ход", "шуруповерт акамуляторный", "chimney pipe", "cordless drill", "garden hose 20 m",
           "краска белая", "смеситель для ванны", "door handle chrome"]
NOISE = 0.02


def build(workspace_root: Path, items: int) -> tuple[object, object, object]:
    from core.collection import Collection
    from core.data.bundled import CATALOGUE_PRODUCTS
    from core.data.formats import read_table
    from core.embedders import load_embedder
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open(workspace_root)
    db = Database(workspace.default_db_url)
    embedder = load_embedder("default", device="cpu", fallback=False)
    products = read_table(CATALOGUE_PRODUCTS)
    base = embedder.encode(products["name"].tolist())
    rng = np.random.default_rng(0)
    picks = np.arange(items) % len(base)
    vectors = base[picks] + rng.normal(0, NOISE, size=(items, base.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"I{i:06d}" for i in range(items)]
    texts = [f"{products['name'].iloc[p]} #{i}" for i, p in enumerate(picks)]
    metadata = [{"category": str(products["category"].iloc[p])} for p in picks]
    started = time.perf_counter()
    collection = Collection(embedder.dimension, index_kind="auto", embedder=embedder, model_spec=embedder.spec)
    collection.add(ids, vectors, texts=texts, metadata=metadata)
    folder = collection.save(workspace.collection_dir("big"))
    db.save_collection({"name": "big", "model_spec": embedder.spec, "model_fingerprint": embedder.fingerprint,
                        "dimension": embedder.dimension, "index_kind": "auto", "path": str(folder)},
                       ({"item_key": i, "text": t, "metadata_json": m} for i, t, m in zip(ids, texts, metadata,
                                                                                         strict=True)))
    print(f"built {items} items ({collection.stats()['index_factory']}) in {time.perf_counter() - started:.0f} s")
    return workspace, db, embedder


def interleaved(actions: list, repeats: int) -> list[np.ndarray]:
    """Time each action once per round, round after round, so load changes hit all of them alike.
    Every call gets a query text of its own: nothing is answered from the embedding cache."""
    times: list[list[float]] = [[] for _ in actions]
    for i in range(repeats):
        for position, action in enumerate(actions):
            times[position].append(float(latencies_ms(lambda _, a=action, n=i: a(n), 1)[0]))
    return [np.asarray(t) for t in times]


def stats(values: np.ndarray) -> str:
    return f"{np.median(values):8.1f} {np.percentile(values, 95):8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embtune-studio-bench-"))
    os.environ["EMBTUNE_HOME"] = str(root)
    os.environ.pop("EMBTUNE_DB", None)
    _workspace, _db, embedder = build(root, args.items)
    snapshot = cpu_snapshot()

    from streamlit.testing.v1 import AppTest

    from core.labelling import propose_candidates
    from core.maps import compute_map
    from webapp import widgets

    collection = widgets.collection("big")  # the studio's cached object, as the pages use it
    index = collection._ensure_index()
    model = embedder.model if hasattr(embedder, "model") else None
    rows = []

    # Data page: search.
    data_page = AppTest.from_file(str(PAGES / "data.py"), default_timeout=600).run()
    data_page.text_input(key="search_query").input(QUERIES[0]).run()  # warm: model + collection cached

    def page_search(i: int) -> None:
        data_page.text_input(key="search_query").input(f"{QUERIES[i % len(QUERIES)]} p{i}").run()

    def plain_search(i: int) -> None:
        vector = model.encode([f"{QUERIES[i % len(QUERIES)]} n{i}"], normalize_embeddings=True).astype(np.float32)
        index.search(vector, 5)

    rows.append(("Data: search, k 5", *interleaved(
        [page_search, lambda i: collection.search(f"{QUERIES[i % len(QUERIES)]} c{i}", 5), plain_search],
        args.repeats), 300.0))

    # Label page: next candidates (top-5 + 5 nearest the boundary from a pool of 50).
    label_page = AppTest.from_file(str(PAGES / "label.py"), default_timeout=600)
    label_page.session_state["annotator"] = "bench"
    label_page.session_state["label_mode"] = "Type a query"
    label_page.run()
    label_page.text_input(key="label_typed").input(QUERIES[1]).run()

    def page_candidates(i: int) -> None:
        label_page.text_input(key="label_typed").input(f"{QUERIES[i % len(QUERIES)]} p{i}").run()

    def plain_candidates(i: int) -> None:
        vector = model.encode([f"{QUERIES[i % len(QUERIES)]} n{i}"], normalize_embeddings=True).astype(np.float32)
        scores, _positions = index.search(vector, 50)
        rest = scores[0][5:]
        np.argsort(np.abs(rest - np.median(rest)))[:5]

    rows.append(("Label: next candidates", *interleaved(
        [page_candidates, lambda i: propose_candidates(collection, f"{QUERIES[i % len(QUERIES)]} k{i}"),
         plain_candidates], args.repeats), 300.0))

    # Map page: first open projects (UMAP of a 20k sample) and caches; the second open reads the cache.
    first_open = time.perf_counter()
    map_page = AppTest.from_file(str(PAGES / "map.py"), default_timeout=1800).run()
    first_open = time.perf_counter() - first_open
    assert not map_page.exception, map_page.exception
    emap = compute_map(collection, method="umap", name="big")
    assert emap.from_cache

    def plain_umap(_: int) -> None:
        import umap

        umap.UMAP(n_components=2, metric="cosine", random_state=0).fit_transform(emap.vectors)

    rows.append(("Map: second open (UMAP)", latencies_ms(lambda _: map_page.run(), min(args.repeats, 10)),
                 latencies_ms(lambda _: compute_map(collection, method="umap", name="big"), min(args.repeats, 10)),
                 latencies_ms(plain_umap, 1), 1000.0))

    print(f"\nmachine: {machine_line()}")
    print(f"collection: {args.items} items, {collection.stats()['index_factory']}, bundled MiniLM (384-d); "
          f"map first open {first_open:.1f} s ({len(emap.ids)} of {emap.total} points)")
    print(f"{'operation':<26} {'page p50':>8} {'p95':>8} {'core p50':>8} {'p95':>8} {'plain p50':>9} {'p95':>8} "
          f"{'page/plain':>10} {'target ms':>9}")
    for name, page_ms, core_ms, plain_ms, target in rows:
        print(f"{name:<26} {stats(page_ms)} {stats(core_ms)} {np.median(plain_ms):9.1f} "
              f"{np.percentile(plain_ms, 95):8.1f} {np.median(page_ms) / np.median(plain_ms):10.2f} {target:9.0f}")
    print(cpu_report(snapshot))


if __name__ == "__main__":
    main()
