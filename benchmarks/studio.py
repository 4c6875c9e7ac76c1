"""Studio server-side latency per interaction — page time vs the core call it makes (and the plain libraries).

What the serving-speed issue asks: a label click and a Data search answer with p95 ≤ 1 s on the bundled
catalogue with the default model. Five interactions, each timed three ways where they apply:

* ``page`` — the page script run by Streamlit's AppTest after the click (AppTest reruns the whole page;
  a browser's click on a score reruns only the candidate fragment, so this is the upper bound);
* ``core`` — the core/storage call the page makes (``db.add_label``, ``next_unlabelled_query`` +
  ``propose_candidates``, ``Collection.search``, ``run_evaluation``, ``compute_map``);
* ``plain`` — the plain libraries doing the same work: sentence-transformers ``encode`` + faiss
  ``search`` for search and candidates, umap-learn projecting the same points for the map.

The collection: by default the studio's own demo state (``webapp.first_start.prepare_bundled_catalogue``:
the bundled catalogue's 434 products indexed with the default model, its queries queued, its map
projected). ``--items N`` instead builds an N-item collection from the catalogue's vectors repeated with
small Gaussian noise (σ 0.02) — encoding 100k real texts would take ~40 minutes on 2 cores, and what is
timed does not depend on where the stored vectors came from. Run::

    .venv/bin/python benchmarks/studio.py                     # the bundled catalogue, default model
    .venv/bin/python benchmarks/studio.py --items 100000      # a 100k collection
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


def bundled(workspace_root: Path) -> tuple[object, object, object, str]:
    """The studio's first-start state, as ``embtune studio`` prepares it."""
    from core.embedders import load_embedder
    from storage.db import Database
    from storage.workspace import Workspace
    from webapp.first_start import prepare_bundled_catalogue

    workspace = Workspace.open(workspace_root)
    db = Database(workspace.default_db_url)
    started = time.perf_counter()
    prepare_bundled_catalogue(workspace, db, say=lambda line: print(line, flush=True), show_progress=False)
    print(f"first start prepared in {time.perf_counter() - started:.0f} s")
    return workspace, db, load_embedder("default", device="cpu", fallback=False), "catalogue"


def build(workspace_root: Path, items: int) -> tuple[object, object, object, str]:
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
    db.add_label_queries("big", QUERIES * 4, source="bench")
    print(f"built {items} items ({collection.stats()['index_factory']}) in {time.perf_counter() - started:.0f} s")
    return workspace, db, embedder, "big"


def interleaved(actions: list, repeats: int) -> list[np.ndarray]:
    """Time each action once per round, round after round, so load changes hit all of them alike.
    Every call gets a query text of its own: nothing is answered from the embedding cache."""
    times: list[list[float]] = [[] for _ in actions]
    for i in range(repeats):
        for position, action in enumerate(actions):
            times[position].append(float(latencies_ms(lambda _, a=action, n=i: a(n), 1)[0]))
    return [np.asarray(t) for t in times]


def stats(values: np.ndarray) -> str:
    return f"{np.median(values):.1f} | {np.percentile(values, 95):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=0, help="0: the bundled catalogue; N: an N-item collection")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--evaluations", type=int, default=3, help="repeats of the (slow) evaluate interaction")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="embtune-studio-bench-"))
    os.environ["EMBTUNE_HOME"] = str(root)
    os.environ.pop("EMBTUNE_DB", None)
    _workspace, db, embedder, name = bundled(root) if args.items == 0 else build(root, args.items)
    snapshot = cpu_snapshot()

    from streamlit.testing.v1 import AppTest

    from core.evaluation import run_evaluation
    from core.labelling import next_unlabelled_query, propose_candidates
    from core.maps import compute_map
    from webapp import widgets

    collection = widgets.collection(name)  # the studio's cached object, as the pages use it
    index = collection._ensure_index()
    model = embedder.model
    rows = []

    def page(script: str, **state: object) -> AppTest:
        app = AppTest.from_file(str(PAGES / script), default_timeout=1800)
        for key, value in {"annotator": "bench", **state}.items():
            app.session_state[key] = value
        return app.run()

    def encode_plain(text: str) -> np.ndarray:
        return model.encode([text], prompt_name="query" if "query" in (model.prompts or {}) else None,
                            normalize_embeddings=True).astype(np.float32)

    # Label page: a click on a score (the label is written; the candidate list is not recomputed).
    label_page = page("label.py", label_mode="Next unlabelled")
    first_candidate = next(key for key in (b.key for b in label_page.button) if key and key.startswith("score-"))
    item_id = first_candidate.split("-")[1]
    query = label_page.session_state["label_current"]

    def page_label(i: int) -> None:
        label_page.button(key=f"score-{item_id}-{(0.0, 0.5, 1.0)[i % 3]}").click().run()

    def core_label(i: int) -> None:
        db.add_label(collection_name=name, query=query, item_key=item_id, item_text="", score=(0.0, 0.5, 1.0)[i % 3],
                     annotator="bench-core")

    rows.append(("Label: score click", *interleaved([page_label, core_label], args.repeats), None, 1000.0))

    # Label page: the next unlabelled query and its candidates.
    def page_next(_: int) -> None:
        label_page.button(key="label_next").click().run()

    queued = db.label_queries(name)

    def core_next(i: int) -> None:
        current = next_unlabelled_query(queued, db.labels(name), "bench-core", after=queued[i % len(queued)])
        propose_candidates(collection, f"{current} c{i}")

    def plain_next(i: int) -> None:
        scores, _positions = index.search(encode_plain(f"{queued[i % len(queued)]} n{i}"), 50)
        rest = scores[0][5:]
        np.argsort(np.abs(rest - np.median(rest)))[:5]

    rows.append(("Label: next query", *interleaved([page_next, core_next, plain_next], args.repeats), 1000.0))

    # Data page: search (every call a new query text: nothing is answered from the embedding cache).
    data_page = page("data.py")
    data_page.text_input(key="search_query").input(QUERIES[0]).run()

    def page_search(i: int) -> None:
        data_page.text_input(key="search_query").input(f"{QUERIES[i % len(QUERIES)]} p{i}").run()

    def plain_search(i: int) -> None:
        index.search(encode_plain(f"{QUERIES[i % len(QUERIES)]} n{i}"), 5)

    rows.append(("Data: search, k 5", *interleaved(
        [page_search, lambda i: collection.search(f"{QUERIES[i % len(QUERIES)]} c{i}", 5), plain_search],
        args.repeats), 1000.0))

    # Compare page: evaluate the default model on the bundled catalogue (the page's Evaluate button).
    compare_page = page("compare.py", compare_data_kind="Bundled catalogue", compare_models=["default"])
    rows.append(("Compare: evaluate default", *interleaved(
        [lambda _: compare_page.button(key="compare_run").click().run(),
         lambda _: run_evaluation("bundled:catalogue", ["default"], db=db, regressions_limit=10)],
        args.evaluations), None, None))

    # Map page: the first start projected and cached the map; an open reads the cache.
    emap = compute_map(collection, method="umap", name=name)
    assert emap.from_cache

    def plain_umap(_: int) -> None:
        import umap

        umap.UMAP(n_components=2, metric="cosine", random_state=0).fit_transform(emap.vectors)

    map_page = page("map.py")
    assert not map_page.exception, map_page.exception
    rows.append(("Map: open (cached UMAP)", latencies_ms(lambda _: map_page.run(), min(args.repeats, 10)),
                 latencies_ms(lambda _: compute_map(collection, method="umap", name=name), min(args.repeats, 10)),
                 latencies_ms(plain_umap, 1), 1000.0))

    print(f"\nmachine: {machine_line()}")
    print(f"collection {name!r}: {len(collection)} items, {collection.stats()['index_factory']}, "
          f"model {embedder.model_id} ({embedder.dimension}-d); map {len(emap.ids)} of {emap.total} points")
    print("| interaction | page p50 ms | page p95 | core p50 ms | core p95 | plain p50 ms | page/plain | target p95 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, page_ms, core_ms, plain_ms, target in rows:
        plain = f"{np.median(plain_ms):.1f}" if plain_ms is not None else "-"
        ratio = f"{np.median(page_ms) / np.median(plain_ms):.2f}" if plain_ms is not None else "-"
        print(f"| {label} | {stats(page_ms)} | {stats(core_ms)} | {plain} | {ratio} | "
              f"{f'{target:.0f} ms' if target else '-'} |")
    print(cpu_report(snapshot))


if __name__ == "__main__":
    main()
