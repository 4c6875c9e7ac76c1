"""The bundled model on the bundled catalogue: real search behaviour, and the console script for real."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.collection.named import index_file, search_collection
from storage.db import Database
from storage.workspace import Workspace
from tests.conftest import CATALOGUE

pytestmark = pytest.mark.integration


def catalogue_rows() -> list[dict[str, str]]:
    with open(CATALOGUE / "products.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bundled_catalogue_is_large_bilingual_and_labelled() -> None:
    rows = catalogue_rows()
    assert len(rows) >= 300
    assert {row["lang"] for row in rows} == {"ru", "en"}
    assert len({row["category"] for row in rows}) >= 10
    with open(CATALOGUE / "queries.csv", encoding="utf-8") as handle:
        queries = list(csv.DictReader(handle))
    ids = {row["id"] for row in rows}
    assert all(q["item_id"] in ids and 0.0 <= float(q["score"]) <= 1.0 for q in queries)
    texts = {q["query"] for q in queries}
    assert {"дымо ход", "шуруповерт акамуляторный", "chimney pipe"} <= texts
    assert {"typo", "split_word", "cross_language"} <= {q["kind"] for q in queries}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory, bundled_embedder):
    workspace = Workspace.open(tmp_path_factory.mktemp("ws"))
    db = Database(workspace.db_url())
    index_file(CATALOGUE / "products.csv", collection="catalogue", text_column="name", id_column="id",
               workspace=workspace, db=db, embedder=bundled_embedder)
    return workspace, db


@pytest.mark.parametrize("query", ["дымоход", "дымо ход", "chimney cap"])
def test_chimney_query_finds_a_chimney_item_in_top_3(catalogue, query: str) -> None:
    workspace, db = catalogue
    hits = search_collection("catalogue", query, k=3, workspace=workspace, db=db)
    assert any(hit.metadata["category"] == "chimneys_stoves" for hit in hits), [h.text for h in hits]


@pytest.mark.parametrize(("query", "expected"), [("шуруповерт акамуляторный", "Шуруповерт аккумуляторный"),
                                               ("cordles dril", "Cordless drill")])
def test_default_model_ranks_the_right_product_first_for_misspelt_queries_before_training(
        catalogue, query: str, expected: str) -> None:
    workspace, db = catalogue
    hits = search_collection("catalogue", query, k=1, workspace=workspace, db=db)
    assert hits[0].text.startswith(expected), hits[0].text


def test_search_filter_on_catalogue_metadata(catalogue) -> None:
    workspace, db = catalogue
    hits = search_collection("catalogue", "drill", k=5, workspace=workspace, db=db, filter={"lang": "ru"})
    assert len(hits) == 5 and all(hit.metadata["lang"] == "ru" for hit in hits)


def test_console_script_indexes_and_searches(tmp_path: Path) -> None:
    env = {**os.environ, "EMBTUNE_HOME": str(tmp_path / "ws"), "HF_HUB_OFFLINE": "1"}
    script = Path(sys.executable).with_name("embtune")
    small = tmp_path / "few.csv"
    rows = catalogue_rows()[:40]
    with open(small, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    subprocess.run([str(script), "index", str(small), "--collection", "few", "--text-column", "name",
                    "--id-column", "id"], check=True, env=env, capture_output=True, text=True)
    result = subprocess.run([str(script), "search", "few", "дымоход", "-k", "3", "--json"], env=env,
                            capture_output=True, text=True, check=True)
    hits = json.loads(result.stdout)
    assert len(hits) == 3 and hits[0]["metadata"]["category"] == "chimneys_stoves"
    failed = subprocess.run([str(script), "search", "missing", "x"], env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.strip() == (
        "error: collection 'missing' does not exist (collections: few)")
    assert "Traceback" not in failed.stderr
