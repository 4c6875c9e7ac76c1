"""Evaluating several models on one data set — what ``embtune eval`` and the studio's Compare page
run — and keeping the report (JSON + Markdown) so a UI can reopen it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError
from core.evaluation.compare import Comparison, Regression, compare_results, comparison_table, regressions
from core.evaluation.metrics import EvaluationResult, evaluate_retrieval
from core.evaluation.sets import load_retrieval_set
from core.progress import CancelToken, ProgressCallback
from storage.runs import RunStore
from storage.workspace import atomic_write_json, atomic_write_text


@dataclass
class EvaluationReport:
    data_name: str
    results: list[EvaluationResult]
    comparisons: dict[str, list[Comparison]]  # "B vs A" → comparisons
    regressions: list[Regression] = field(default_factory=list)
    queries: int = 0
    corpus_items: int = 0
    corpus_note: str = ""
    """Where the corpus came from, said when it is smaller than a user may think (a pairs file alone)."""
    overlaps: list[dict[str, Any]] = field(default_factory=list)
    """Per model trained on some of these queries: ``{"model", "run", "queries", "excluded"}``."""
    judged_run: dict[str, Any] | None = None
    """When the data is a run's own test split: the run's name and its gate's figures, to read beside these."""

    @property
    def warnings(self) -> list[str]:
        """One line per model that was trained or tuned on some of the evaluated queries."""
        lines = []
        for overlap in self.overlaps:
            if overlap["excluded"]:
                lines.append(f"{overlap['queries']} queries that {overlap['model']} trained on (run "
                             f"{overlap['run']}'s training and validation splits) were left out")
            else:
                lines.append(f"{overlap['queries']} of {self.queries} queries are ones {overlap['model']} trained on "
                             f"(run {overlap['run']}'s training and validation splits): on them it measures memory, "
                             "not search; --exclude-training-queries leaves them out")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data_name, "queries": self.queries, "corpus_items": self.corpus_items,
            "corpus_note": self.corpus_note, "overlaps": self.overlaps, "warnings": self.warnings,
            "judged_run": self.judged_run,
            "results": [r.to_dict() for r in self.results],
            "comparisons": {key: [c.to_dict() for c in value] for key, value in self.comparisons.items()},
            "regressions": [r.to_dict() for r in self.regressions],
        }

    def markdown(self) -> str:
        lines = [f"# Evaluation on {self.data_name}", ""]
        metrics = ("ndcg@10", "ndcg@10_binary", "mrr@10", "recall@1", "recall@3", "recall@10", "map@100")
        lines += ["| model | dim | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        for result in self.results:
            for dimension in result.dimensions:
                values = " | ".join(f"{result.metric(m, dimension):.4f}" for m in metrics)
                lines.append(f"| {result.model_id} | {dimension} | {values} |")
        for key, comparisons in self.comparisons.items():
            lines += ["", f"## {key}", "", comparison_table(comparisons, label_a="A", label_b="B")]
        return "\n".join(lines) + "\n"


REPORT_PREFIX = "eval-"


def save_report(report: EvaluationReport, folder: str | Path, *, name: str | None = None) -> Path:
    """Keep a report (JSON with per-query values and rankings, Markdown beside it) so a UI can list
    and reopen it after a reload or restart."""
    stem = name or f"{REPORT_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    target = Path(folder) / f"{stem}.json"
    payload = report.to_dict()
    payload["models"] = [r.model_id for r in report.results]
    atomic_write_json(target, payload)
    atomic_write_text(target.with_suffix(".md"), report.markdown())
    return target


def saved_reports(folder: str | Path) -> list[Path]:
    """Evaluation reports in ``folder``, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{REPORT_PREFIX}*.json"), key=lambda p: p.stat().st_mtime, reverse=True)


def run_evaluation(data_path: str | Path, models: Sequence[str], *, dimensions: Sequence[int] | None = None,
                   corpus: Mapping[str, str] | None = None, db: Any = None, device: str = "auto",
                   regressions_limit: int = 0, resamples: int = 2000, seed: int = 0,
                   exclude_training_queries: bool = False, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> EvaluationReport:
    """Evaluate each model on the same queries; compare every later model with the first, paired.

    ``data_path`` may be ``run:NAME`` (or ``run:latest``): the test split that run was judged on. A model
    trained on some of the queries is reported (``EvaluationReport.overlaps``), and with
    ``exclude_training_queries`` those queries are left out for every model, so the comparison stays paired.
    """
    from core.embedders import load_embedder
    from core.training.runs import resolve_model_spec

    if not models:
        raise EmbtuneError("give at least one --model to evaluate")
    judged_run = None
    if str(data_path).startswith("run:"):
        folder, judged_run = run_test_split(str(data_path), db)
        data = load_retrieval_set(folder, corpus=corpus)
    else:
        data = load_retrieval_set(data_path, corpus=corpus)
    overlaps = training_overlaps(data, models, db)
    if exclude_training_queries and overlaps:
        seen = set().union(*(overlap.pop("query_ids") for overlap in overlaps))
        kept = [query_id for query_id in data.queries if query_id not in seen]
        if not kept:
            raise EmbtuneError(f"every query of {data_path} is one a model trained on: nothing is left to evaluate")
        data = data.subset(kept)
        for overlap in overlaps:
            overlap["excluded"] = True
    for overlap in overlaps:
        overlap.pop("query_ids", None)
    results = []
    for spec in models:
        embedder = load_embedder(resolve_model_spec(spec, db), device=device, fallback=False)
        result = evaluate_retrieval(embedder, data, dimensions=dimensions, progress=progress, cancel=cancel)
        result.model_id = spec
        results.append(result)
        if db is not None:
            RunStore(db).save_evaluation(model_spec=spec, model_fingerprint=result.model_fingerprint,
                                         data_source=str(data_path), metrics=result.metrics,
                                         per_query=result.per_query_rows(),
                                         run_name=spec[4:] if spec.startswith("run:") else None)
    comparisons = {f"{r.model_id} vs {results[0].model_id}": compare_results(results[0], r, resamples=resamples,
                                                                               seed=seed) for r in results[1:]}
    worst = regressions(results[0], results[-1], data, limit=regressions_limit) \
        if regressions_limit and len(results) > 1 else []
    note = ""
    if not str(data_path).startswith("bundled:") and not Path(data_path).is_dir():
        note = ("the corpus given with --corpus plus the items the pairs file names" if corpus is not None else
                "only the items named in the pairs file: other items of your catalogue are not searched "
                "(give --corpus FILE or COLLECTION to search all of them)")
    return EvaluationReport(data.name, results, comparisons, worst, queries=len(data.queries),
                            corpus_items=len(data.corpus), corpus_note=note, overlaps=overlaps,
                            judged_run=judged_run)


def run_test_split(spec: str, db: Any) -> tuple[Path, dict[str, Any]]:
    """The folder of the test split run ``spec`` was judged on (kept beside its model), and the run's name and
    gate figures."""
    from core.training.runs import gate_of, resolve_run

    run = resolve_run(spec, db)
    folder = (run.splits or {}).get("test_set")
    if not folder or not Path(folder).is_dir():
        raise EmbtuneError(f"{spec}: this run kept no test split to evaluate on (it had none, or its model folder "
                           "moved): give a folder or a pairs file with --data")
    gate = gate_of(run)
    return Path(folder), {"run": run.name, "base": (run.config or {}).get("model"),
                          "gate": gate.to_dict() if gate is not None else None}


def training_overlaps(data: Any, models: Sequence[str], db: Any) -> list[dict[str, Any]]:
    """For each model that is a training run: how many of the set's queries it trained or was tuned on."""
    from core.training.heldout import query_key, seen_query_keys
    from core.training.runs import run_of_model

    found = []
    for spec in models:
        run = run_of_model(spec, db)
        seen = seen_query_keys(run.splits) if run is not None else set()
        query_ids = {query_id for query_id, text in data.queries.items() if query_key(text) in seen}
        if query_ids:
            found.append({"model": spec, "run": run.name, "queries": len(query_ids), "excluded": False,
                          "query_ids": query_ids})
    return found
