"""Which embedder suits a labelled set best? Speed, memory and how well it keeps labels apart.

For a table of texts or images with a label column, each model is loaded fresh (no shared
model, no cache, so the timings and memory are its own) and measured on:

- ``ms_per_item_batch``: one batched encode of every item, divided by the item count;
- ``ms_per_item_single``: items encoded one call at a time (what an interactive query costs);
- ``peak_rss_delta_mb``: the process's peak resident memory during load + encode, minus
  what it used before (sampled every few milliseconds by a watcher thread);
- ``discrimination``: mean cosine to items of the same label minus mean cosine to items of
  other labels (per item, then averaged): how far apart the model puts the labels;
- ``top1`` / ``top5``: leave-one-out retrieval by label: each item's nearest other items
  (1 or 5) include one with its label. Items whose label occurs once are left out, as no
  right answer exists for them.

Random or tiny models test the plumbing; rankings only mean something on real models.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataError, EmbtuneError
from core.images import check_image_files

# Single-item timing uses at most this many items: enough for a stable mean, short on slow models.
SINGLE_TIMING_ITEMS = 20
RSS_SAMPLE_SECONDS = 0.005


@dataclass
class ModelComparison:
    model: str
    model_id: str
    dimension: int
    load_seconds: float
    ms_per_item_batch: float
    ms_per_item_single: float
    peak_rss_delta_mb: float
    discrimination: float
    same_label_cosine: float
    other_label_cosine: float
    top1: float
    top5: float


@dataclass
class ComparisonResult:
    data: str
    modality: str
    items: int
    labels: int
    evaluated_items: int
    models: list[ModelComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict()}

    def table(self) -> str:
        header = (f"{'model':<40} {'dim':>5} {'ms/item batch':>13} {'ms/item single':>14} {'peak RSS Δ MB':>13} "
                  f"{'discrim.':>9} {'top-1':>6} {'top-5':>6}")
        lines = [header, "-" * len(header)]
        for m in self.models:
            name = m.model if len(m.model) <= 40 else "…" + m.model[-39:]
            lines.append(f"{name:<40} {m.dimension:>5} {m.ms_per_item_batch:>13.2f} {m.ms_per_item_single:>14.2f} "
                         f"{m.peak_rss_delta_mb:>13.1f} {m.discrimination:>9.4f} {m.top1:>6.3f} {m.top5:>6.3f}")
        return "\n".join(lines)

    def verdict(self) -> str:
        """One line: the best model on discrimination and the fastest (batch) one."""
        if not self.models:
            return "no models compared"
        best = max(self.models, key=lambda m: m.discrimination)
        fastest = min(self.models, key=lambda m: m.ms_per_item_batch)
        if best is fastest:
            return (f"{best.model} is best on both: discrimination {best.discrimination:.4f} "
                    f"and {best.ms_per_item_batch:.2f} ms/item")
        return (f"best discrimination: {best.model} ({best.discrimination:.4f}, top-1 {best.top1:.3f}); "
                f"fastest: {fastest.model} ({fastest.ms_per_item_batch:.2f} ms/item in batch)")


def label_metrics(vectors: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Discrimination and leave-one-out top-1/top-5 by label for L2-normalised ``vectors``."""
    labels_array = np.asarray([str(label) for label in labels])
    n = len(labels_array)
    similarity = vectors @ vectors.T
    same = labels_array[:, None] == labels_array[None, :]
    np.fill_diagonal(same, False)
    other = labels_array[:, None] != labels_array[None, :]
    has_pair = same.any(axis=1)
    if not has_pair.any() or not other.any():
        raise DataError("the label column needs at least two labels and one label with two or more items")
    rows = np.flatnonzero(has_pair & other.any(axis=1))
    same_mean = np.array([similarity[i, same[i]].mean() for i in rows])
    other_mean = np.array([similarity[i, other[i]].mean() for i in rows])
    ranked = similarity.copy()
    np.fill_diagonal(ranked, -np.inf)  # leave the item itself out
    order = np.argsort(-ranked, axis=1, kind="stable")[:, : min(5, n - 1)]
    hits = labels_array[order] == labels_array[:, None]
    return {
        "same": float(same_mean.mean()), "other": float(other_mean.mean()),
        "discrimination": float((same_mean - other_mean).mean()),
        "top1": float(hits[rows, 0].mean()), "top5": float(hits[rows].any(axis=1).mean()),
    }


def compare_embedders(
    data: str | Path,
    models: Sequence[str],
    *,
    label_column: str,
    text_column: str | None = None,
    image_column: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    single_items: int = SINGLE_TIMING_ITEMS,
) -> ComparisonResult:
    """Measure each model on the labelled items of ``data`` (CSV/JSONL/Parquet)."""
    from core.data.formats import read_table
    from core.data.validate import validate_items
    from core.embedders import load_embedder

    if not models:
        raise EmbtuneError("name at least one model to compare (--model, repeatable)")
    if (text_column is None) == (image_column is None):
        raise EmbtuneError("give exactly one of --text-column and --image-column")
    column = image_column or text_column
    frame = read_table(data)
    validate_items(frame, text_column=column, id_column=None, source=data)
    validate_items(frame, text_column=label_column, id_column=None, source=data)
    labels = frame[label_column].astype(str).str.strip().tolist()
    values = frame[column].astype(str).str.strip().tolist()
    items: list[Any]
    if image_column:
        base = Path(data).resolve().parent
        items = [(base / value).resolve() for value in values]
        check_image_files(items, labels=[f"{data}: row {row + 1} (column {image_column!r})"
                                         for row in range(len(items))])
    else:
        items = values
    counts = Counter(labels)
    if len(counts) < 2 or max(counts.values()) < 2:  # refused before any model is loaded
        raise DataError(f"{data}: column {label_column!r} needs at least two labels and one label with two or more "
                        f"items (found {len(counts)} label{'s' if len(counts) != 1 else ''})")
    result = ComparisonResult(data=str(data), modality="image" if image_column else "text", items=len(items),
                              labels=len(counts), evaluated_items=sum(1 for label in labels if counts[label] > 1))
    for spec in models:
        result.models.append(_measure(spec, items, labels, image=image_column is not None, device=device,
                                      batch_size=batch_size, single_items=single_items, load=load_embedder))
    return result


def _measure(spec: str, items: list[Any], labels: list[str], *, image: bool, device: str, batch_size: int,
             single_items: int, load: Any) -> ModelComparison:
    gc.collect()
    with _PeakRss() as memory:
        started = time.perf_counter()
        embedder = load(spec, device=device, fallback=False, cache=False, reuse=False, batch_size=batch_size)
        load_seconds = time.perf_counter() - started
        if image and not hasattr(embedder, "encode_images"):
            raise EmbtuneError(f"{spec} is a text model and the items are images: compare clip: models here")
        encode = embedder.encode_images if image else embedder.encode
        encode(items[:1])  # warm-up: first-call set-up is not per-item cost
        started = time.perf_counter()
        vectors = np.asarray(encode(items), dtype=np.float32)
        batch_ms = (time.perf_counter() - started) * 1000 / len(items)
        sample = items[: max(1, min(single_items, len(items)))]
        started = time.perf_counter()
        for item in sample:
            encode([item])
        single_ms = (time.perf_counter() - started) * 1000 / len(sample)
    metrics = label_metrics(vectors, labels)
    comparison = ModelComparison(
        model=spec, model_id=embedder.model_id, dimension=int(embedder.dimension), load_seconds=load_seconds,
        ms_per_item_batch=batch_ms, ms_per_item_single=single_ms, peak_rss_delta_mb=memory.delta_mb,
        discrimination=metrics["discrimination"], same_label_cosine=metrics["same"],
        other_label_cosine=metrics["other"], top1=metrics["top1"], top5=metrics["top5"],
    )
    del embedder, encode
    gc.collect()
    return comparison


class _PeakRss:
    """Peak resident memory above the starting point while the block runs (a watcher thread samples it)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._stop = threading.Event()
        self._baseline = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_SECONDS):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def delta_mb(self) -> float:
        return max(0, self._peak - self._baseline) / 2**20
