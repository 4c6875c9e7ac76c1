"""The MedQuAD benchmark script's whole path on tens of real pairs (the full run is on demand)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import REPO, SHARED_DATA

pytestmark = pytest.mark.integration


def load_script():
    spec = importlib.util.spec_from_file_location("medical_matryoshka", REPO / "benchmarks" / "medical_matryoshka.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_medical_benchmark_smoke_run_trains_in_its_own_process_and_reports(tmp_path: Path) -> None:
    script = load_script()
    report = script.main(["--data", str(SHARED_DATA / "medquad"), "--out", str(tmp_path), "--variants", "full",
                          "--max-pairs", "32", "--dev-queries", "8", "--max-seq-length", "48",
                          "--forgetting-data", "bundled:general"])
    assert report["dev"]["queries"] == 8 and report["dev"]["answers"] >= 16
    full = report["full"]
    assert full["world_size"] == 1 and full["peak_rss_gib"] > 0.1 and full["train_seconds"] > 0
    assert {c["dimension"] for c in full["comparisons"]} == {384, 256, 128, 64}
    ndcg = [c for c in full["comparisons"] if c["metric"] == "ndcg@10"]
    assert len(ndcg) == 4 and all(c["ci_low"] <= c["delta"] <= c["ci_high"] for c in ndcg)
    assert "ndcg@10_before" in full["forgetting"]
    table = (tmp_path / "medical_matryoshka.md").read_text(encoding="utf-8")
    assert "base → full" in table and "| 64 |" in table
    assert json.loads((tmp_path / "medical_matryoshka.json").read_text(encoding="utf-8"))["full"]["examples_per_s"] > 0
    assert (tmp_path / "full" / "embtune_run.json").exists() and (tmp_path / "dev" / "qrels.csv").exists()
