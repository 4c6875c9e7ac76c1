"""The Gradio demos driven by their real client, launched in-process on 127.0.0.1 with tiny models.

Tiny random models test the plumbing (shapes, both columns, errors, the fine-tuner loop), never
search quality; the benchmark and the screenshots run the bundled model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core.collection.named import index_file
from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace
from tests.conftest import CATALOGUE, free_port, write_csv
from tests.test_images import WORKFLOWS, screen

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


def serve(demo: Any) -> tuple[Any, Client]:
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, Client(f"http://127.0.0.1:{port}/", verbose=False)


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path,
            tiny_model_dir_48: Path) -> Iterator[Client]:
    """The catalogue indexed with one tiny model, a finished run with another, and a collection with no run."""
    from demos.product_search import build_demo

    workspace = Workspace.open(tmp_path_factory.mktemp("demo-ws"))
    db = Database(workspace.db_url())
    for name in ("catalogue", "plain"):
        index_file(CATALOGUE / "products.csv", collection=name, text_column="name", id_column="id",
                   model=str(tiny_model_dir), device="cpu", workspace=workspace, db=db, show_progress=False)
    RunStore(db).start("older", collection_name="catalogue", model_path=str(tiny_model_dir))
    RunStore(db).update("older", status="finished")
    RunStore(db).start("tuned", collection_name="catalogue", model_path=str(tiny_model_dir_48))
    RunStore(db).update("tuned", status="finished")
    RunStore(db).start("broken", collection_name="catalogue", model_path=str(tiny_model_dir))
    RunStore(db).update("broken", status="failed")
    demo, client = serve(build_demo(workspace=workspace, db=db, device="cpu"))
    yield client
    client.close()
    demo.close()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[tuple[Client, Path]]:
    """9 screenshots of 3 workflows (tiny CLIP), a tuner that trains after 2 confirmations, and bad files."""
    from core.online import FineTunerConfig
    from demos.image_search import build_demo

    root = tmp_path_factory.mktemp("demo-screens")
    workspace = Workspace.open(root / "ws")
    db = Database(workspace.db_url())
    (root / "shots").mkdir()
    rows = [["id", "image", "workflow_id"]]
    for workflow, colour in WORKFLOWS.items():
        for variant in range(3):
            screen(root / "shots" / f"{workflow}{variant}.png", colour, variant)
            rows.append([f"{workflow}-{variant}", f"shots/{workflow}{variant}.png", workflow])
        screen(root / f"new-{workflow}.png", colour, 7)
    index_file(write_csv(root / "screens.csv", rows), collection="shots", image_column="image", id_column="id",
               model=f"clip:{tiny_clip_dir}", device="cpu", workspace=workspace, db=db, show_progress=False)
    (root / "notes.png").write_text("not an image at all")
    (root / "cut.png").write_bytes((root / "new-login.png").read_bytes()[:200])
    Image.new("1", (10_000, 10_000)).save(root / "huge.png")
    config = FineTunerConfig(trigger_threshold=2, epochs=2, learning_rate=1e-3, batch_size=4, holdout_every=0,
                             device="cpu")
    demo, client = serve(build_demo(workspace=workspace, db=db, collection="shots", tuner_config=config))
    yield client, root
    client.close()
    demo.close()


def _graded_labels(query: str) -> dict[str, float]:
    """The catalogue's own judgements for one query, read from its file (not through the demo's code)."""
    import pandas as pd

    labels = pd.read_csv(CATALOGUE / "queries.csv")
    rows = labels[labels["query"] == query]
    return dict(zip(rows["item_id"], rows["score"].astype(float), strict=True))


def _ndcg_at_10(ranked: list[str], grades: dict[str, float]) -> float:
    """Graded NDCG@10 by its textbook definition: gains are the grades, discounts log2(rank + 1)."""
    import math

    dcg = sum(grades.get(item, 0.0) / math.log2(rank + 2) for rank, item in enumerate(ranked[:10]))
    ideal = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(grades.values(), reverse=True)[:10]))
    return dcg / ideal


def test_product_compare_fills_both_columns_and_marks_one_sided_items(product: Client) -> None:
    result = product.predict("дымо ход", "catalogue", "", "", 10, api_name="/compare")
    assert result["b"] is not None and result["b_note"] is None
    assert result["b"]["model"] == "run:tuned"  # the newest finished run, not the failed one after it
    grades = _graded_labels("дымо ход")
    for side in (result["a"], result["b"]):
        assert len(side["hits"]) == 10 and side["seconds"] > 0
        assert {"id", "score", "metadata", "text"} <= set(side["hits"][0])
        assert set(side["only_here"]) <= {hit["id"] for hit in side["hits"]}
    ids_a = {h["id"] for h in result["a"]["hits"]}
    ids_b = {h["id"] for h in result["b"]["hits"]}
    assert set(result["a"]["only_here"]) == ids_a - ids_b and set(result["b"]["only_here"]) == ids_b - ids_a
    assert result["labelled"] and result["query_kind"] == "split_word"
    assert sorted(result["relevant"]) == sorted(item for item, grade in grades.items() if grade >= 0.5)
    for side in (result["a"], result["b"]):
        ranked = [hit["id"] for hit in side["hits"]]
        assert side["hit_at_k"] == float(any(grades.get(item, 0.0) >= 0.5 for item in ranked))
        assert side["ndcg_at_10"] == pytest.approx(_ndcg_at_10(ranked, grades), abs=1e-6)


def test_product_page_call_returns_two_tables_and_unlabelled_queries_have_no_metrics(product: Client) -> None:
    table_a, summary_a, table_b, summary_b = product.predict("garden hose", "catalogue", "", "run:older", 3,
                                                             api_name="/search")
    assert len(table_a["data"]) == 3 and len(table_b["data"]) == 3
    assert table_a["headers"] == ["rank", "id", "name", "category", "score", "only here"]
    # run:older is the collection's own model: same answers, nothing one-sided.
    assert [r[1] for r in table_a["data"]] == [r[1] for r in table_b["data"]]
    assert "run:older" in summary_b and "no relevance labels" in summary_a and " ms" in summary_a
    models = product.predict("catalogue", api_name="/models")
    assert models["model_b"] == "run:tuned" and set(models["runs"]) == {"run:tuned", "run:older"}


def test_product_without_a_run_says_so_in_column_b(product: Client) -> None:
    result = product.predict("chimney pipe", "plain", "", "", 4, api_name="/compare")
    assert result["b"] is None and "no fine-tuned run yet" in result["b_note"]
    assert len(result["a"]["hits"]) == 4 and result["labelled"]


@pytest.mark.parametrize(("args", "message"), [
    (("  ", "catalogue", "", "", 5), "the query is empty"),
    (("drill", "nope", "", "", 5), "collection 'nope' does not exist"),
    (("drill", "catalogue", "", "run:nope", 5), "no training run named 'nope'"),
    (("drill", "catalogue", "run:broken", "", 5), "run:broken is failed: it has no model"),
])
def test_product_bad_input_is_one_clear_error(product: Client, args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(AppError, match=message):
        product.predict(*args, api_name="/compare")


def test_screens_lookup_by_image_and_by_text(screens: tuple[Client, Path]) -> None:
    client, root = screens
    # An indexed screenshot looked up again: its own workflow first, at cosine 1; k (2) below the 3 workflows.
    found = client.predict(handle_file(str(root / "shots" / "settings1.png")), "", 2, api_name="/match")
    best, second = found["matches"]
    assert best["workflow_id"] == "settings" and best["item_id"] == "settings-1"
    assert best["score"] == pytest.approx(1.0, abs=1e-4) and best["score"] > second["score"] and found["confident"]
    by_text = client.predict(None, "a login form", 2, api_name="/match")
    assert len(by_text["matches"]) == 2
    table, verdict, _picture, best = client.predict(handle_file(str(root / "new-settings.png")), "", 3,
                                                    api_name="/lookup")
    assert len(table["data"]) == 3 and best == table["data"][0][1] and "threshold" in verdict


def test_screens_confirmations_reach_the_fine_tuner_and_the_state_changes(screens: tuple[Client, Path]) -> None:
    client, root = screens
    before = client.predict(api_name="/state")
    first = client.predict(handle_file(str(root / "new-login.png")), "", 1, api_name="/match")
    assert before["pending"] == 0 and before["trainings_run"] == 0 and before["tuner_message"] is None
    outcome = client.predict(handle_file(str(root / "new-checkout.png")), "checkout", api_name="/confirm_wrong")
    assert "confirmed checkout" in outcome and "1 of 2" in outcome
    assert client.predict(api_name="/state")["pending"] == 1
    outcome = client.predict(handle_file(str(root / "new-login.png")), "login", api_name="/confirm_right")
    assert "fine-tuning started" in outcome
    deadline = time.monotonic() + 180  # generous: CI machines may be busy
    state = client.predict(api_name="/state")
    # The count moves before the tuner is idle again (it still swaps and prunes): wait for both.
    while not (state["trainings_run"] == 1 and state["state"] == "idle") and time.monotonic() < deadline:
        assert len(client.predict(None, "settings", 1, api_name="/match")["matches"]) == 1  # lookups go on
        state = client.predict(api_name="/state")
    assert state["trainings_run"] == 1 and state["state"] == "idle", state
    assert state["checkpoint"] and state["last_loss"] is not None and state["examples_kept"] == 2
    after = client.predict(handle_file(str(root / "new-login.png")), "", 1, api_name="/match")
    assert after["model_fingerprint"] != first["model_fingerprint"]  # the swapped-in model answers
    with pytest.raises(AppError, match="nowhere is not in the list of choices"):  # the picker's own check
        client.predict(handle_file(str(root / "new-login.png")), "nowhere", api_name="/confirm_wrong")


@pytest.mark.parametrize(("name", "message"), [
    ("notes.png", "notes.png is not an image PIL can read"),
    ("cut.png", "cut.png .*truncated or corrupted"),
    ("huge.png", r"huge.png is 10000×10000 \(100 MP\): uploads may have at most 40 MP"),
])
def test_screens_bad_files_are_one_clear_error(screens: tuple[Client, Path], name: str, message: str) -> None:
    client, root = screens
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(str(root / name)), "", 3, api_name="/match")


def test_screens_nothing_to_look_up_is_an_error(screens: tuple[Client, Path]) -> None:
    client, _ = screens
    with pytest.raises(AppError, match="upload a screenshot or type a description"):
        client.predict(None, "   ", 3, api_name="/match")


def test_twenty_concurrent_queries_are_all_answered_and_the_server_still_answers(product: Client) -> None:
    queries = ["дымоход", "drill", "garden hose", "paint", "chimney pipe"] * 4
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda q: product.predict(q, "catalogue", "", "", 5, api_name="/compare"), queries))
    assert len(results) == 20 and all(len(r["a"]["hits"]) == 5 and r["b"] for r in results)
    assert [r["query"] for r in results] == queries
    with pytest.raises(AppError):
        product.predict("", "catalogue", "", "", 5, api_name="/compare")
    assert len(product.predict("drill", "catalogue", "", "", 2, api_name="/compare")["a"]["hits"]) == 2
