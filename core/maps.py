"""Embedding maps: a collection's stored vectors projected to 2-D, drawn as PNG or interactive HTML.

A map shows whether the model separates what the user cares about (colour by a metadata
field: a category, a workflow, a label). The projection is UMAP (umap-learn, cosine) or
t-SNE (scikit-learn, cosine). It is the slow part, so it is cached as a JSON file in the
collection's folder, keyed by the collection's model fingerprint, generation and size, the
method, the point cap and the seed: drawing again (another colour field, PNG after HTML) is
instant, and any re-index or model change makes a new projection.

Above ``MAX_MAP_POINTS`` points a seeded random sample is projected, and the result says so:
both methods grow faster than linearly, and a scatter of more points than pixels shows
nothing more.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.collection import Collection
from core.errors import CollectionError, DataError, EmbtuneError
from storage.workspace import atomic_path, atomic_write_json

METHODS = ("umap", "tsne")
# Sample above this many points (seeded): t-SNE/UMAP on 20 000 points take about a minute on 2 CPU cores.
MAX_MAP_POINTS = 20_000
# Fewer points than this make no meaningful 2-D neighbourhood structure (UMAP/t-SNE need neighbours).
MIN_MAP_POINTS = 5
CACHE_PREFIX = "map-"
# Projections of at most this many points run on one thread: their OpenMP workers spin-wait, and on a
# busy 2-core machine a 40-point t-SNE measured 0.1 s on one thread but 3–21 s on two.
SINGLE_THREAD_MAX_POINTS = 2_000
# Tooltip texts are cut to this many characters so a page of long documents stays light.
TOOLTIP_TEXT_CHARS = 200
# Categorical colour fields with more values than this get no legend in the PNG (it would cover the plot).
PNG_LEGEND_MAX = 20


@dataclass
class EmbeddingMap:
    """2-D coordinates for (a sample of) a collection's items, with what to show beside them."""

    method: str
    ids: list[str]
    coords: np.ndarray
    texts: list[str | None]
    metadata: list[dict[str, Any]]
    total: int
    sampled: bool
    seed: int
    from_cache: bool = False
    cache_file: str | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    vectors: np.ndarray | None = None
    """The embeddings of the mapped points (for placing a query); the model's own unit vectors."""

    @property
    def fields(self) -> list[str]:
        return sorted({key for meta in self.metadata for key in meta})


def compute_map(
    collection: Collection,
    *,
    method: str = "umap",
    max_points: int = MAX_MAP_POINTS,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    name: str | None = None,
    embedder: Any = None,
    announce: Callable[[str], None] | None = None,
) -> EmbeddingMap:
    """Project the collection's stored vectors to 2-D (no model is loaded).

    With ``embedder`` (another model, e.g. a fine-tuned one beside the base the collection was
    built with) the mapped items are embedded with it first; its projection and vectors are
    cached under its own fingerprint, so the side-by-side view is instant the second time.

    ``cache_dir`` defaults to the collection's own folder; pass ``False``-y with an unsaved
    collection to skip caching. ``name`` is how errors call the collection. ``announce`` hears one
    line when a projection (not a cache read) starts.
    """
    started = time.perf_counter()
    label = name or (collection.path.name if collection.path else "collection")
    method = (method or "").lower()
    if method not in METHODS:
        raise EmbtuneError(f"map method {method!r} is unknown: use {' or '.join(METHODS)}")
    if max_points < MIN_MAP_POINTS:
        raise EmbtuneError(f"max_points {max_points} is too small: a map needs at least {MIN_MAP_POINTS} points")
    total = len(collection)
    if total < MIN_MAP_POINTS:
        raise CollectionError(f"collection {label!r} has {total} item{'s' if total != 1 else ''}: "
                              f"a map needs at least {MIN_MAP_POINTS}")
    ids = collection.ids
    positions = np.arange(total)
    sampled = total > max_points
    if sampled:
        positions = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
    folder = Path(cache_dir) if cache_dir else collection.path
    own_model = embedder is None or embedder.fingerprint == collection.info.model_fingerprint
    fingerprint = str((collection.info.model_fingerprint if own_model else embedder.fingerprint) or "unknown")
    cache_file = folder / _cache_name(collection, method, max_points, seed, fingerprint) if folder else None
    items = [collection.item(ids[p]) for p in positions]
    result = EmbeddingMap(
        method=method, ids=[item["id"] for item in items], coords=np.empty((0, 2)), total=total, sampled=sampled,
        texts=[item["text"] for item in items], metadata=[item["metadata"] for item in items], seed=seed,
        cache_file=str(cache_file) if cache_file else None,
    )
    if sampled:
        result.notes.append(f"sampled {len(positions)} of {total} points (seed {seed}); the cap is {max_points}")
    if own_model:
        result.vectors = np.asarray(collection.vectors)[positions]
    else:
        vectors_file = cache_file.with_suffix(".npy") if cache_file else None
        if vectors_file is not None and vectors_file.is_file():
            result.vectors = np.load(vectors_file)
        if result.vectors is None or len(result.vectors) != len(positions):
            result.vectors = np.asarray(embedder.encode_document([text or "" for text in result.texts]),
                                        dtype=np.float32)
            if vectors_file is not None:
                with atomic_path(vectors_file) as tmp, open(tmp, "wb") as handle:
                    np.save(handle, result.vectors)
    cached = _read_cache(cache_file, result.ids) if cache_file else None
    if cached is not None:
        result.coords, result.from_cache = cached, True
    else:
        if announce is not None:  # the projection takes tens of seconds the first time (numba compiles)
            announce(f"projecting the {label} map ({method.upper()}, {len(result.ids)} points; cached afterwards)…")
        result.coords = _project(result.vectors, method, seed)
        if cache_file is not None:
            _write_cache(cache_file, method, result)
    result.seconds = time.perf_counter() - started
    return result


def write_map(emap: EmbeddingMap, out: str | Path, *, color_by: str | None = None, title: str | None = None) -> Path:
    """Write the map as PNG (matplotlib) or interactive HTML (altair), chosen by ``out``'s suffix."""
    target = Path(out)
    suffix = target.suffix.lower()
    if suffix not in (".png", ".html"):
        raise EmbtuneError(f"map file {target} must end in .png or .html")
    if color_by is not None and color_by not in emap.fields:
        raise DataError(f"field {color_by!r} is not in the collection's metadata "
                        f"(fields: {', '.join(emap.fields) or 'none'})")
    title = title or f"{emap.method.upper()} map, {len(emap.ids)} points" + (
        f" (sample of {emap.total})" if emap.sampled else "")
    if suffix == ".png":
        _write_png(emap, target, color_by, title)
    else:
        _write_html(emap, target, color_by, title)
    return target


def _project(vectors: np.ndarray, method: str, seed: int) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    with warnings.catch_warnings(), threadpool_limits(1 if n <= SINGLE_THREAD_MAX_POINTS else None):
        # Both libraries warn about seeds disabling parallelism and small data; the result is what we asked for.
        warnings.simplefilter("ignore")
        if method == "umap":
            import umap

            reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), metric="cosine",
                                random_state=seed, init="spectral" if n > 50 else "random")
            coords = reducer.fit_transform(vectors)
        else:
            from sklearn.manifold import TSNE

            perplexity = float(max(1.0, min(30.0, (n - 1) / 3)))
            coords = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                          random_state=seed).fit_transform(vectors)
    return np.asarray(coords, dtype=np.float64)


def _cache_name(collection: Collection, method: str, max_points: int, seed: int, fingerprint: str) -> str:
    info = collection.info
    key = f"{fingerprint}:{info.model_fingerprint}:{info.generation}:{len(collection)}:{method}:{max_points}:{seed}"
    return f"{CACHE_PREFIX}{method}-{fingerprint[:12]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _read_cache(path: Path, ids: list[str]) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        coords = np.asarray(payload["coords"], dtype=np.float64)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache is recomputed, never trusted
    if payload.get("ids") != ids or coords.shape != (len(ids), 2):
        return None
    return coords


def _write_cache(path: Path, method: str, emap: EmbeddingMap) -> None:
    # Older projections of this collection for the same model (previous generations or sizes) are dead weight.
    family = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{family}-*.json"):
        if old != path:
            old.unlink(missing_ok=True)
            old.with_suffix(".npy").unlink(missing_ok=True)
    atomic_write_json(path, {"method": method, "ids": emap.ids, "coords": emap.coords.round(6).tolist(),
                             "total": emap.total, "sampled": emap.sampled, "seed": emap.seed})


def _colour_values(emap: EmbeddingMap, color_by: str | None) -> list[Any] | None:
    if color_by is None:
        return None
    return [meta.get(color_by) for meta in emap.metadata]


def _is_numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def _write_png(emap: EmbeddingMap, target: Path, color_by: str | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = _colour_values(emap, color_by)
    figure, axes = plt.subplots(figsize=(9, 7), dpi=120)
    size = max(2.0, min(30.0, 3000 / len(emap.ids)))
    x, y = emap.coords[:, 0], emap.coords[:, 1]
    if values is None:
        axes.scatter(x, y, s=size, alpha=0.8)
    elif _is_numeric(values):
        numbers = np.array([np.nan if v is None else float(v) for v in values])
        points = axes.scatter(x, y, c=numbers, s=size, cmap="viridis", alpha=0.85)
        figure.colorbar(points, ax=axes, label=color_by)
    else:
        labels = ["(none)" if v is None else str(v) for v in values]
        categories = sorted(set(labels))
        cmap = plt.get_cmap("tab20", max(1, len(categories)))
        for index, category in enumerate(categories):
            mask = np.array([label == category for label in labels])
            axes.scatter(x[mask], y[mask], s=size, alpha=0.85, color=cmap(index), label=category)
        if len(categories) <= PNG_LEGEND_MAX:
            axes.legend(title=color_by, fontsize="small", markerscale=max(1.0, 30 / size), loc="best")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()
    with atomic_path(target) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)


def _write_html(emap: EmbeddingMap, target: Path, color_by: str | None, title: str) -> None:
    import altair as alt
    import pandas as pd

    fields = [f for f in emap.fields if f not in ("x", "y", "id", "text")]
    rows = []
    for item_id, (x, y), text, meta in zip(emap.ids, emap.coords.tolist(), emap.texts, emap.metadata, strict=True):
        short = (text or "")[:TOOLTIP_TEXT_CHARS] + ("…" if text and len(text) > TOOLTIP_TEXT_CHARS else "")
        rows.append({"x": x, "y": y, "id": item_id, "text": short,
                     **{f: None if meta.get(f) is None else str(meta.get(f)) for f in fields}})
    frame = pd.DataFrame(rows)
    tooltip = ["id", "text", *fields]
    encoding: dict[str, Any] = {"x": alt.X("x:Q", axis=None, scale=alt.Scale(zero=False)),
                                "y": alt.Y("y:Q", axis=None, scale=alt.Scale(zero=False)), "tooltip": tooltip}
    if color_by is not None:
        numeric = _is_numeric(_colour_values(emap, color_by) or [])
        if numeric:
            frame[color_by] = [meta.get(color_by) for meta in emap.metadata]
        encoding["color"] = alt.Color(f"{color_by}:{'Q' if numeric else 'N'}", title=color_by)
    # The page carries its data inline; the cap above keeps it to a few MB.
    with alt.data_transformers.disable_max_rows():
        chart = alt.Chart(frame, title=title).mark_circle(size=40, opacity=0.8).encode(**encoding).properties(
            width=800, height=600).interactive()
        with atomic_path(target) as tmp:
            chart.save(str(tmp), format="html")


@dataclass(frozen=True)
class QueryPlacement:
    """Where a query lands on a map and which mapped items are its nearest neighbours."""

    x: float
    y: float
    neighbour_ids: list[str]
    scores: list[float]


def place_query(emap: EmbeddingMap, query_vector: np.ndarray, *, k: int = 10) -> QueryPlacement:
    """Put a query on an existing map without projecting again: at the similarity-weighted mean of
    its ``k`` nearest mapped points — the same idea UMAP's ``transform`` starts new points from."""
    if emap.vectors is None or not len(emap.vectors):
        raise EmbtuneError("this map has no vectors to place a query by")
    query = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != emap.vectors.shape[1]:
        raise EmbtuneError(f"the query has {query.shape[0]} dimensions, the map's vectors {emap.vectors.shape[1]}")
    similarities = emap.vectors @ query
    top = np.argsort(-similarities, kind="stable")[:max(1, min(k, len(similarities)))]
    weights = np.clip(similarities[top], 1e-6, None)
    x, y = (emap.coords[top] * weights[:, None]).sum(axis=0) / weights.sum()
    return QueryPlacement(float(x), float(y), [emap.ids[i] for i in top], [float(similarities[i]) for i in top])


@dataclass(frozen=True)
class MapReport:
    """What ``embtune map`` prints: where the map went and whether it was sampled or cached."""

    collection: str
    method: str
    points: int
    total: int
    sampled: bool
    from_cache: bool
    out: str
    seconds: float
    notes: tuple[str, ...] = ()


def map_collection(
    name: str,
    *,
    out: str | Path,
    workspace: Any,
    db: Any,
    method: str = "umap",
    color_by: str | None = None,
    max_points: int = MAX_MAP_POINTS,
    seed: int = 0,
) -> MapReport:
    """Project a named collection and write its map; bad options fail before any projection runs."""
    from core.collection.named import collection_record

    target = Path(out)
    if target.suffix.lower() not in (".png", ".html"):
        raise EmbtuneError(f"map file {target} must end in .png or .html")
    if (method or "").lower() not in METHODS:
        raise EmbtuneError(f"map method {method!r} is unknown: use {' or '.join(METHODS)}")
    collection = Collection.load(collection_record(name, db).path)
    if color_by is not None:
        fields = sorted({key for item_id in collection.ids for key in collection.item(item_id)["metadata"]})
        if color_by not in fields:
            raise DataError(f"field {color_by!r} is not in collection {name!r} (fields: {', '.join(fields) or 'none'})")
    emap = compute_map(collection, method=method, max_points=max_points, seed=seed, name=name)
    write_map(emap, target, color_by=color_by, title=f"{name}: {emap.method.upper()} of {len(emap.ids)} points"
              + (f" (sample of {emap.total})" if emap.sampled else ""))
    return MapReport(collection=name, method=emap.method, points=len(emap.ids), total=emap.total,
                     sampled=emap.sampled, from_cache=emap.from_cache, out=str(target), seconds=emap.seconds,
                     notes=tuple(emap.notes))
