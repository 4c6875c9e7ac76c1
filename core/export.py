"""``embtune export``: write a model's ONNX or OpenVINO files, then prove what they cost and what they gain.

The files come from sentence-transformers' own export helpers (``core.embedders.backends``) and go into the model
folder (the bundled model: its copy in the workspace). The exported model is then evaluated against the original
torch model on the same queries — the run's test split, ``--data``, or else the bundled catalogue — with
``core.evaluation``: NDCG@10 per Matryoshka dimension, and the encoding speed of both on the same texts. A drop
of more than ``QUALITY_TOLERANCE`` (0.5 NDCG@10 point) at any dimension is a warning, and a collection given
with ``collection=`` only switches to the exported model when the loss is within it; otherwise the original stays
the collection's model. With a database, both evaluations are saved (per query, like ``embtune eval``) and the
report is kept with the run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.embedders.backends import (
    INT8_DOT_PRODUCT_FLAGS,
    Backend,
    backend_spec,
    export_backend,
    exported_file,
    int8_dot_product_support,
    parse_backend,
    require_engine,
    serving_folder,
    split_backend_spec,
)
from core.errors import CollectionError, DataError, EmbtuneError, ModelLoadError
from core.evaluation import evaluate_retrieval, load_retrieval_set

QUALITY_TOLERANCE = 0.005  # NDCG@10 is 0..1: 0.005 is half a point
SPEED_TEXTS = 256  # texts timed per model (the evaluation corpus's first ones)
SPEED_BATCH = 64
# Columns a calibration table's texts are read from, the first one present wins.
CALIBRATION_COLUMNS = ("text", "anchor", "query", "positive", "item", "question", "answer", "name")


@dataclass
class ExportReport:
    """One export: where its files are, how its NDCG@10 and speed compare with the original, what was decided."""

    source: str
    backend: str
    spec: str  # the spec that loads the exported model (``openvino-int8:/path``)
    folder: str
    model_file: str
    reused: bool
    export_seconds: float
    data_name: str
    dimensions: list[int]
    ndcg_original: dict[int, float]
    ndcg_exported: dict[int, float]
    speed_original: float  # sentences/s, batch SPEED_BATCH
    speed_exported: float
    tolerance: float = QUALITY_TOLERANCE
    run_name: str | None = None
    collection: str | None = None
    collection_switched: bool = False
    calibration: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def delta(self) -> dict[int, float]:
        return {d: self.ndcg_exported[d] - self.ndcg_original[d] for d in self.dimensions}

    @property
    def worst_drop(self) -> float:
        return max(0.0, -min(self.delta.values()))

    @property
    def within_tolerance(self) -> bool:
        return self.worst_drop <= self.tolerance + 1e-12

    @property
    def speed_ratio(self) -> float:
        return self.speed_exported / self.speed_original if self.speed_original else float("nan")

    def table(self) -> str:
        lines = [f"| dim | NDCG@10 torch | NDCG@10 {self.backend} | Δ points |", "|---|---|---|---|"]
        for d in self.dimensions:
            lines.append(f"| {d} | {self.ndcg_original[d]:.4f} | {self.ndcg_exported[d]:.4f} | "
                         f"{self.delta[d] * 100:+.2f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        for key in ("ndcg_original", "ndcg_exported"):
            payload[key] = {str(d): v for d, v in payload[key].items()}
        payload.update(delta={str(d): v for d, v in self.delta.items()}, worst_drop=self.worst_drop,
                       within_tolerance=self.within_tolerance, speed_ratio=self.speed_ratio)
        return payload


def export_model(
    source: str,
    *,
    format: str,
    quantize: str | None = None,
    calibration: str | Path | None = None,
    data: str | Path | None = None,
    corpus: dict[str, str] | None = None,
    dimensions: Sequence[int] | None = None,
    collection: str | None = None,
    overwrite: bool = False,
    tolerance: float = QUALITY_TOLERANCE,
    db: Any = None,
    workspace: Any = None,
) -> ExportReport:
    """Export ``source`` (a model spec, a run name or ``run:NAME``) to ``format`` and evaluate it (module docstring).

    An existing export is reused unless ``overwrite``; ``calibration`` (a table with a text column) calibrates an
    OpenVINO int8 export, which otherwise uses the run's training texts or the evaluation corpus.
    """
    from core.embedders import load_embedder
    from core.embedders.factory import resolve_spec

    backend = parse_backend(format, quantize)
    if backend.is_torch:
        raise EmbtuneError("--format must be onnx or openvino (torch is the model as it is)")
    run, model_spec = _resolve_source(source, db)
    resolved = resolve_spec(model_spec)
    if resolved.kind == "path":
        check_exportable(Path(resolved.location))
    require_engine(backend.engine)
    test_set, train_texts = _evaluation_data(run, data, corpus, db)
    warnings: list[str] = []
    if calibration is not None and backend.name != "openvino-int8":
        warnings.append(f"--calibration is only used by openvino int8 ({backend.name} needs none): ignored")
    if data is None and run is None:
        warnings.append("no --data and no run: evaluated on the bundled catalogue's labelled queries")
    if backend.quantize and int8_dot_product_support() is False:
        warnings.append(f"this CPU has no int8 dot-product instructions ({', '.join(INT8_DOT_PRODUCT_FLAGS)}): "
                        f"{backend.name} usually runs slower than fp32 on it; serve the int8 files on a CPU that has "
                        f"them, or export --format {backend.engine} without --quantize here")

    original = load_embedder(model_spec, device="cpu", fallback=False, cache=False)
    folder = Path(resolved.location) if resolved.kind == "path" else \
        serving_folder(resolved.kind, resolved.location, workspace=workspace, name=resolved.model_id,
                       model=original.model)
    existing = exported_file(folder, backend)
    calibration_note = None
    started = time.perf_counter()
    if existing is None or overwrite:
        texts = None
        if backend.name == "openvino-int8":
            texts, calibration_note = _calibration(calibration, train_texts, test_set)
        export_backend(folder, backend, calibration=texts)
    elif calibration is not None:
        warnings.append(f"{existing} already exists and was reused, so --calibration was not used: "
                        "add --overwrite to export again")
    export_seconds = time.perf_counter() - started
    # The folder's own path, not ``default``: a collection switched to it reopens the same files from any workspace.
    spec = backend_spec(str(folder), backend)
    exported = load_embedder(spec, fallback=False, cache=False, reuse=False, workspace=workspace)

    dims = sorted({int(d) for d in (dimensions or _run_dimensions(run) or [original.full_dimension])}, reverse=True)
    before = evaluate_retrieval(original, test_set, dimensions=dims)
    after = evaluate_retrieval(exported, test_set, dimensions=dims)
    texts_for_speed = list(test_set.corpus.values())[:SPEED_TEXTS]
    report = ExportReport(
        source=source, backend=backend.name, spec=spec, folder=str(folder), model_file=str(exported.model_file),
        reused=existing is not None and not overwrite, export_seconds=export_seconds, data_name=test_set.name,
        dimensions=dims, ndcg_original={d: before.metric("ndcg@10", d) for d in dims},
        ndcg_exported={d: after.metric("ndcg@10", d) for d in dims},
        speed_original=sentences_per_second(original, texts_for_speed),
        speed_exported=sentences_per_second(exported, texts_for_speed), tolerance=tolerance,
        run_name=run.name if run is not None else None, calibration=calibration_note, warnings=warnings,
    )
    if not report.within_tolerance:
        worst = min(dims, key=lambda d: report.delta[d])
        report.warnings.append(
            f"{backend.name} loses {report.worst_drop * 100:.2f} NDCG@10 points at dimension {worst} "
            f"(tolerance {tolerance * 100:.1f}): keep serving the torch model" +
            (f"; collection {collection!r} keeps it" if collection else ""))
    if collection is not None:
        report.collection = collection
        if report.within_tolerance:
            _switch_collection(collection, original, exported, workspace, db)
            report.collection_switched = True
    if db is not None:
        _record(report, before, after, original, exported, db)
    return report


def check_exportable(folder: Path) -> None:
    """Only a sentence-transformers folder (what embtune trains, merges and bundles) is exported: one line otherwise."""
    if (folder / "modules.json").is_file():
        return
    if (folder / "adapter_config.json").is_file():
        raise ModelLoadError(f"{folder} is a LoRA adapter, not a whole model: merge it first "
                             "(embtune adapters merge RUN --out FOLDER) and export the merged folder")
    raise ModelLoadError(f"{folder} is not a sentence-transformers model folder (no modules.json): embtune exports "
                         "the bundled model, a run's model or a folder saved by sentence-transformers")


def sentences_per_second(embedder: Any, texts: Sequence[str], batch_size: int = SPEED_BATCH) -> float:
    """Texts encoded per second, after one warm-up batch; the embedder must not cache (``cache=False``)."""
    if not texts:
        return float("nan")
    embedder.encode_document(list(texts[:batch_size]), batch_size=batch_size, show_progress=False)
    started = time.perf_counter()
    embedder.encode_document(list(texts), batch_size=batch_size, show_progress=False)
    return len(texts) / max(time.perf_counter() - started, 1e-9)


def read_calibration_texts(path: str | Path) -> list[str]:
    """The texts of a calibration table (CSV/JSONL/Parquet): its first column named in ``CALIBRATION_COLUMNS``."""
    from core.data.formats import read_table

    frame = read_table(path)
    column = next((c for c in CALIBRATION_COLUMNS if c in frame.columns), None)
    if column is None:
        raise DataError(f"{path}: no text column for calibration (looked for {', '.join(CALIBRATION_COLUMNS)}; "
                        f"found {', '.join(map(str, frame.columns)) or 'none'})")
    return [str(t) for t in frame[column].dropna().tolist() if str(t).strip()]


# -- pieces -------------------------------------------------------------------------------------------


def _resolve_source(source: str, db: Any) -> tuple[Any, str]:
    """(the training run or None, the spec of the model to export)."""
    prefixed, bare = split_backend_spec(source)
    if prefixed is not None:
        raise EmbtuneError(f"{source!r} names a backend: give the model itself ({bare}) and --format")
    name = bare[4:] if bare.startswith("run:") else bare
    if db is None or (not bare.startswith("run:") and Path(bare).expanduser().exists()):
        return None, bare
    from core.training.runs import resolve_run
    from storage.runs import RunStore

    if not bare.startswith("run:") and RunStore(db).get(name) is None:
        return None, bare
    run = resolve_run(f"run:{name}", db)
    return run, run.model_path


def _evaluation_data(run: Any, data: str | Path | None, corpus: dict[str, str] | None,
                     db: Any) -> tuple[Any, list[str]]:
    """(the retrieval set to evaluate on, the run's training texts for calibration or [])."""
    train_texts: list[str] = []
    test_set = load_retrieval_set(data, corpus=corpus) if data is not None else None
    if run is not None:
        from core.data.split import split_by_group
        from core.data.training_data import group_column_for, load_training_data, retrieval_set_for
        from core.training.config import TrainingConfig

        config = TrainingConfig.from_dict(dict(run.config))
        loaded = load_training_data(config.data, data_format=config.data_format, corpus=config.corpus,
                                    corpus_text_column=config.corpus_text_column, db=db)
        splits = split_by_group(loaded.frame, group_column_for(loaded.frame, config.group_by),
                                validation=config.validation_fraction, test=config.test_fraction, seed=config.seed,
                                source=config.data)
        columns = [c for c in ("anchor", "positive", "text") if c in splits.train.columns]
        train_texts = [str(t) for c in columns for t in splits.train[c].tolist()]
        if test_set is None:
            if config.test_data:
                test_set = load_retrieval_set(config.test_data,
                                              corpus=None if Path(config.test_data).is_dir() else loaded.corpus)
            elif len(splits.test) and loaded.data_format != "classes":
                test_set = retrieval_set_for(splits.test, loaded.corpus, "test")
            else:
                raise DataError(f"run {run.name!r} has no retrieval test split: give --data to evaluate on")
    if test_set is None:
            test_set = load_retrieval_set("bundled:catalogue")
    return test_set, train_texts


def _calibration(path: str | Path | None, train_texts: list[str], test_set: Any) -> tuple[list[str], str]:
    if path is not None:
        return read_calibration_texts(path), str(path)
    if train_texts:
        return train_texts, "the run's training split"
    return list(test_set.corpus.values()), f"the corpus of {test_set.name} (no --calibration given)"


def _run_dimensions(run: Any) -> list[int]:
    return [int(d) for d in (run.config or {}).get("matryoshka_dims") or []] if run is not None else []


def _switch_collection(name: str, original: Any, exported: Any, workspace: Any, db: Any) -> None:
    """Re-embed a collection with the exported model (same model, other backend) and record its new spec."""
    from core.collection.named import collection_record, open_collection

    if db is None:
        raise EmbtuneError("switching a collection to the exported model needs the database")
    record = collection_record(name, db)
    _, built_with = split_backend_spec(record.model_spec)
    if built_with != original.spec:
        raise CollectionError(f"collection {name!r} was built with {record.model_spec}, not {original.spec}: "
                              "export that model, or index the collection with this one first")
    if workspace is None or not hasattr(workspace, "collections_dir"):
        from storage.workspace import Workspace

        workspace = Workspace.open(workspace)
    open_collection(name, workspace=workspace, db=db, embedder=exported, rebuild=True)


def _record(report: ExportReport, before: Any, after: Any, original: Any, exported: Any, db: Any) -> None:
    from storage.runs import RunStore

    runs = RunStore(db)
    for result, embedder, speed in ((before, original, report.speed_original),
                                    (after, exported, report.speed_exported)):
        runs.save_evaluation(model_spec=embedder.spec, model_fingerprint=embedder.fingerprint,
                             data_source=f"export:{report.data_name}",
                             metrics={**result.metrics, "sentences_per_s": speed},
                             per_query=result.per_query_rows(), run_name=report.run_name)
    if report.run_name is not None:
        run = runs.get(report.run_name)
        kept = dict(run.before_after or {})
        kept["exports"] = [*kept.get("exports", []), report.to_dict()]
        runs.update(report.run_name, before_after=kept)


def backend_of(spec: str) -> Backend:
    """The backend a model spec (e.g. a collection's ``model_spec``) is served with."""
    return parse_backend(split_backend_spec(spec)[0])
