"""The studio's pages, run by Streamlit's AppTest on an empty and a populated workspace, each bad input
included: a message on the page, never a traceback, nothing written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.data.importing import save_upload
from core.errors import DataError
from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace
from tests.conftest import bench_config, seed_training_speed

PAGES = Path(__file__).resolve().parents[1] / "webapp" / "pages"
APP = PAGES.parent / "app.py"
TIMEOUT = 180


def page(name: str, **state: object):
    from streamlit.testing.v1 import AppTest

    test = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)
    for key, value in state.items():
        test.session_state[key] = value
    return test.run()


def no_traceback(test) -> None:
    assert not test.exception, [e.value for e in test.exception]


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


@pytest.fixture()
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, Database]:
    root = tmp_path / "empty-ws"
    monkeypatch.setenv("EMBTUNE_HOME", str(root))
    monkeypatch.delenv("EMBTUNE_DB", raising=False)
    workspace = Workspace.open(root)
    seed_training_speed(workspace)
    return workspace, Database(workspace.default_db_url)




ITEM_NAMES = ["chimney pipe steel", "chimney pipe", "garden hose", "cordless drill", "drill bits", "paint white",
              "paint black", "hose reel", "pipe wrench", "chimney cap"]


@pytest.fixture()
def populated(empty, tiny_model_dir: Path, tmp_path: Path) -> tuple[Workspace, Database]:
    from core.collection.named import index_file

    workspace, db = empty
    items = tmp_path / "items.csv"
    rows = ITEM_NAMES
    items.write_text("id,name,category\n" + "".join(f"P{i},{text},{text.split()[0]}\n" for i, text in
                                                    enumerate(rows)), encoding="utf-8")
    index_file(items, collection="shop", text_column="name", id_column="id", model=str(tiny_model_dir),
               workspace=workspace, db=db, show_progress=False)
    db.add_label_queries("shop", ["chimney", "drill", "hose"])
    return workspace, db


# -- every page, empty workspace --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data", "label", "train", "compare", "map"])
def test_every_page_opens_on_an_empty_workspace(empty, name: str) -> None:
    test = page(name)
    no_traceback(test)
    assert not test.error


def test_the_app_navigates_to_the_data_page(empty) -> None:
    from streamlit.testing.v1 import AppTest

    test = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    no_traceback(test)
    assert "Data" in texts(test.title)


# -- Data ---------------------------------------------------------------------------------------------


def test_data_page_lists_collections_and_searches(populated) -> None:
    test = page("data")
    no_traceback(test)
    listed = test.dataframe[0].value
    assert list(listed["name"]) == ["shop"] and int(listed["size"].iloc[0]) == 10
    test.text_input(key="search_query").input("chimney").run()
    no_traceback(test)
    results = test.dataframe[-1].value
    assert len(results) == 5 and {"rank", "id", "match", "cosine", "text", "category"} <= set(results.columns)
    # the bar reads each cosine against what an ordinary item of the collection scores for this query
    from core.collection.named import open_collection

    workspace, db = populated
    collection = open_collection("shop", workspace=workspace, db=db)
    query = collection.embedder.encode_query(["chimney"])[0]
    ordinary = float(np.median(collection.vectors @ query))
    top = results["cosine"].max()
    expected = np.clip((results["cosine"] - ordinary) / (top - ordinary), 0, 1)
    assert np.allclose(results["match"], expected, atol=1e-3) and results["match"].iloc[0] == 1.0
    assert any(f"cosine {ordinary:.3f}, empty bar" in text for text in texts(test.caption))
    test.radio(key="search_layout").set_value("Cards").run()
    no_traceback(test)
    assert any("cosine" in bar.proto.text for bar in test.get("progress"))


def test_import_checks_first_and_writes_only_on_confirm(populated, tmp_path: Path) -> None:
    _workspace, db = populated
    good = tmp_path / "more.csv"
    good.write_text("id,name\nA1,chimney brush\nA2,ladder\n", encoding="utf-8")
    test = page("data", import_source="A file on this machine")
    test.text_input(key="import_path").input(str(good)).run()
    no_traceback(test)
    assert db.get_collection("more") is None  # seen, not written
    test.text_input(key="import_model").input(str(db.get_collection("shop").model_spec)).run()
    test.button(key="import_confirm").click().run()
    no_traceback(test)
    assert db.get_collection("more").item_count == 2
    assert any("indexed 2 items" in s for s in texts(test.success))


def test_importing_into_an_existing_name_asks_replace_add_or_cancel(populated, tmp_path: Path) -> None:
    from core.collection.named import open_collection

    workspace, db = populated
    more = tmp_path / "shop.csv"  # the file's stem is the name offered: the existing collection's
    more.write_text("id,name,category\nA1,chimney brush,chimney\nA2,ladder,tools\n", encoding="utf-8")
    before = open_collection("shop", workspace=workspace, db=db)
    test = page("data", import_source="A file on this machine")
    test.text_input(key="import_path").input(str(more)).run()
    no_traceback(test)
    assert any("A collection named 'shop' already exists (10 items" in w for w in texts(test.warning))
    assert not [b for b in test.button if b.key == "import_confirm"]  # no silent replace

    test.button(key="import_cancel").click().run()
    assert db.get_collection("shop").item_count == 10 and any("Nothing was imported" in i for i in texts(test.info))

    test.button(key="import_append").click().run()
    no_traceback(test)
    after = open_collection("shop", workspace=workspace, db=db)
    assert db.get_collection("shop").item_count == 12 and len(after) == 12
    assert after.item("P0") == before.item("P0") and after.item("A2")["text"] == "ladder"
    hits = after.search("chimney brush", 1)  # the new rows are searched with the collection's own model
    assert hits[0].id == "A1" and any("added 2 items to 'shop' (now 12)" in m for m in texts(test.success))
    test.button(key="import_append").click().run()  # the same ids again: refused, nothing changes
    assert any("id 'A1' is already in collection 'shop'" in e for e in texts(test.error))
    assert db.get_collection("shop").item_count == 12

    test.button(key="import_replace").click().run()
    no_traceback(test)
    assert db.get_collection("shop").item_count == 2


def test_import_shows_row_problems_as_a_table_and_writes_nothing(populated, tmp_path: Path) -> None:
    _, db = populated
    bad = tmp_path / "bad.csv"
    bad.write_text("id,name\nB1,ok\nB1,duplicate id\nB3,\n", encoding="utf-8")
    test = page("data", import_source="A file on this machine")
    test.text_input(key="import_path").input(str(bad)).run()
    no_traceback(test)
    assert any("problem" in e for e in texts(test.error))
    problems = test.dataframe[-1].value
    assert set(problems["row"]) == {1, 3} and "appears in rows 1, 2" in " ".join(problems["message"])
    assert not [b for b in test.button if b.key == "import_confirm"]
    assert db.get_collection("bad") is None


@pytest.mark.parametrize(("content", "name", "message"), [
    ("", "empty.csv", "file is empty"),
    ("just words", "notes.txt", "unsupported file type"),
    ("id,name\n", "header.csv", "no data rows"),
])
def test_import_of_an_unusable_file_is_a_message(populated, tmp_path: Path, content: str, name: str,
                                                 message: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    test = page("data", import_source="A file on this machine")
    test.text_input(key="import_path").input(str(path)).run()
    no_traceback(test)
    assert any(message in e for e in texts(test.error)), texts(test.error)


def test_uploads_are_checked_for_type_emptiness_and_size(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a CSV, JSONL or Parquet file"):
        save_upload("photo.png", b"\x89PNG", folder=tmp_path)
    with pytest.raises(DataError, match="the file is empty"):
        save_upload("items.csv", b"  \n", folder=tmp_path)
    with pytest.raises(DataError, match=r"over the upload limit of 0\.001 MB"):
        save_upload("items.csv", b"id,name\n" + b"1,x\n" * 1000, folder=tmp_path, limit_mb=0.001)
    assert not list(tmp_path.iterdir())
    kept = save_upload("items.csv", b"id,name\n1,x\n", folder=tmp_path)
    assert kept.read_bytes() == b"id,name\n1,x\n"
    assert save_upload("items.csv", b"id,name\n1,x\n", folder=tmp_path) == kept  # no second copy


def test_delete_needs_confirmation(populated) -> None:
    _workspace, db = populated
    folder = Path(db.get_collection("shop").path)
    test = page("data")
    assert test.button(key="delete_button").disabled
    test.checkbox(key="delete_sure").check().run()
    test.button(key="delete_button").click().run()
    no_traceback(test)
    assert db.get_collection("shop") is None and not folder.exists()


def test_a_collection_deleted_while_shown_is_a_message(populated) -> None:
    from core.collection.named import delete_collection

    workspace, db = populated
    test = page("data")
    test.text_input(key="search_query").input("chimney").run()
    delete_collection("shop", workspace=workspace, db=db)
    test.run()
    no_traceback(test)
    assert any("'shop' no longer exists" in w for w in texts(test.warning))


# -- Label ----------------------------------------------------------------------------------------


def test_buttons_save_labels_with_annotator_and_undo_removes_the_last(populated) -> None:
    _, db = populated
    test = page("label", annotator="ann")
    no_traceback(test)
    assert any("chimney" in m for m in texts(test.markdown))  # the next unlabelled query
    score_keys = [b.key for b in test.button if b.key and b.key.startswith("score-") and b.key.endswith("-1.0")]
    test.button(key=score_keys[0]).click().run()
    test.button(key=[b.key for b in test.button if b.key and b.key.endswith("-0.0")][1]).click().run()
    no_traceback(test)
    labels = db.labels("shop")
    assert [(label.query, label.score, label.annotator) for label in labels] == [("chimney", 1.0, "ann"),
                                                                                   ("chimney", 0.0, "ann")]
    test.button(key="label_undo").click().run()
    assert [label.score for label in db.labels("shop")] == [1.0]
    test.button(key="label_next").click().run()
    assert any("drill" in m for m in texts(test.markdown))  # "chimney" is covered now: next query


def test_typed_query_candidates_include_uncertain_ones(populated) -> None:
    test = page("label", annotator="ann", label_mode="Type a query")
    test.text_input(key="label_typed").input("pipe").run()
    no_traceback(test)
    captions = " ".join(texts(test.caption))
    assert "top-k" in captions and "boundary" in captions


def test_agreement_and_disagreements_are_shown_for_two_annotators(populated) -> None:
    _, db = populated
    for annotator, scores in (("ann", (1.0, 0.0, 1.0)), ("bob", (1.0, 1.0, 1.0))):
        db.add_labels({"collection_name": "shop", "query": "chimney", "item_key": f"P{i}", "score": s,
                       "annotator": annotator} for i, s in enumerate(scores))
    test = page("label", annotator="ann")
    no_traceback(test)
    frames = [f.value for f in test.dataframe]
    agreement = next(f for f in frames if "cohen_kappa" in f.columns)
    assert agreement["shared_pairs"].iloc[0] == 3 and agreement["share_equal"].iloc[0] == pytest.approx(2 / 3)
    disagreements = next(f for f in frames if "bob" in f.columns)
    assert list(disagreements["item_id"]) == ["P1"]


def test_labels_export_as_csv(populated) -> None:
    workspace, db = populated
    db.add_labels([{"collection_name": "shop", "query": "chimney", "item_key": "P0", "score": 1.0,
                    "annotator": "ann"}])
    test = page("label", annotator="ann")
    test.button(key="export_labels").click().run()
    no_traceback(test)
    written = workspace.reports_dir / "labels-shop.csv"
    assert written.read_text(encoding="utf-8").splitlines()[1].startswith("chimney,P0,")


def test_label_page_without_annotator_asks_for_one(populated) -> None:
    test = page("label")
    no_traceback(test)
    assert any("annotator" in w for w in texts(test.warning))


# -- Train ----------------------------------------------------------------------------------------


def test_train_page_offers_only_fitting_losses_and_shows_the_config(populated, tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("anchor,positive\n" + "".join(f"q{i},item {i}\n" for i in range(12)), encoding="utf-8")
    test = page("train", train_source="A file on this machine")
    test.text_input(key="train_file").input(str(pairs)).run()
    no_traceback(test)
    assert test.selectbox(key="train_loss").options == ["mnrl", "cached_mnrl"]
    config = json.loads(test.code[0].value)
    assert config["data"] == str(pairs) and config["loss"] == "mnrl" and config["principal_axes"] is True
    test.checkbox(key="train_axes").uncheck().run()
    assert json.loads(test.code[0].value)["principal_axes"] is False


def test_train_page_reads_a_training_file_once_per_version(populated, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from core.training import launcher

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("anchor,positive\n" + "".join(f"q{i},item {i}\n" for i in range(12)), encoding="utf-8")
    reads: list[str] = []
    inspect = launcher.inspect_training_data
    monkeypatch.setattr(launcher, "inspect_training_data",
                        lambda data, **kw: (data == str(pairs) and reads.append(data)) or inspect(data, **kw))
    test = page("train", train_source="A file on this machine")
    test.text_input(key="train_file").input(str(pairs)).run()
    test.number_input(key="train_epochs").set_value(2.0).run()  # any widget change reruns the page
    assert reads == [str(pairs)]
    pairs.write_text(pairs.read_text(encoding="utf-8") + "q12,item 12\nq13,item 13\n", encoding="utf-8")
    test.number_input(key="train_epochs").set_value(3.0).run()
    no_traceback(test)
    assert reads == [str(pairs)] * 2 and any("14 usable rows" in c for c in texts(test.caption))


def test_training_with_too_few_pairs_is_a_message(populated, tmp_path: Path) -> None:
    pairs = tmp_path / "few.csv"
    pairs.write_text("anchor,positive\na,b\n", encoding="utf-8")
    test = page("train", train_source="A file on this machine")
    test.text_input(key="train_file").input(str(pairs)).run()
    no_traceback(test)
    assert any("at least 8 are needed" in e for e in texts(test.error))
    assert not [b for b in test.button if b.key == "train_launch"]


def test_the_train_page_opens_on_data_it_can_train_and_says_why_labels_cannot(populated) -> None:
    test = page("train")
    no_traceback(test)
    assert not test.error  # no labels yet: it opens on the bundled catalogue, not on an error
    assert test.radio(key="train_source").value == "Bundled catalogue"
    assert "usable rows of scored data" in " ".join(texts(test.caption))
    test.radio(key="train_source").set_value("Labels in storage").run()
    assert any("These labels cannot train yet: 0 labelled pairs on 0 queries" in e for e in texts(test.error))


def _label(db, queries: list[str], per_query: int) -> None:
    db.add_labels([{"collection_name": "shop", "query": query, "item_key": f"P{i}", "item_text": ITEM_NAMES[i],
                    "score": 1.0 if i % 2 else 0.0, "annotator": "ann"}
                   for query in queries for i in range(per_query)])


def test_labels_too_few_to_split_open_the_bundled_data_say_how_many_more_and_keep_launch_off(populated) -> None:
    _, db = populated
    _label(db, ["chimney", "drill"], 6)  # 12 usable pairs, but only 2 queries for 3 splits
    test = page("train")
    no_traceback(test)
    assert test.radio(key="train_source").value == "Bundled catalogue"
    [why] = [i for i in texts(test.info) if i.startswith("Opened on the bundled catalogue")]
    assert ("cannot train yet — 12 labelled pairs on 2 queries; training needs at least 8 pairs on 6 queries "
            "(validation 0.1 / test 0.2): label 4 more queries, or change the fractions") in why
    launch = next(b for b in test.button if b.key == "train_launch")
    assert not launch.disabled  # the bundled data can train

    test.radio(key="train_source").set_value("Labels in storage").run()
    assert any("These labels cannot train yet: 12 labelled pairs on 2 queries" in e for e in texts(test.error))
    launch = next(b for b in test.button if b.key == "train_launch")
    assert launch.disabled and "label 4 more queries" in " ".join(texts(test.caption))
    test.number_input(key="train_validation").set_value(0.0).run()
    test.number_input(key="train_test").set_value(0.5).run()  # 1 query trains, 1 is held out
    no_traceback(test)
    assert not test.error and not next(b for b in test.button if b.key == "train_launch").disabled
    assert json.loads(test.code[0].value)["validation_fraction"] == 0.0


def test_the_cost_of_a_run_is_shown_before_launch_from_the_measured_speed(populated) -> None:
    from core.training.config import TrainingConfig
    from core.training.cost import plan_steps

    _, db = populated
    test = page("train")  # the bundled catalogue with the default model; its speed is a known 3.2 s a step
    no_traceback(test)
    config = TrainingConfig.from_dict(json.loads(test.code[0].value))
    steps = plan_steps(config, db=db).steps
    [line] = [i for i in texts(test.info) if "steps" in i and "of training on this machine" in i]
    assert f"**{steps} steps**" in line and "3.20 s a step" in line and "a test's figure" in line
    minutes = steps * 3.2 / 60
    assert f"{int(minutes)} min" in line  # shown in minutes, not thousands of seconds


def test_runs_list_shows_a_failed_run_with_its_reason(populated) -> None:
    _, db = populated
    runs = RunStore(db)
    runs.start("broken", collection_name="shop", config={})
    runs.update("broken", status="failed", error="CUDA out of memory")
    test = page("train")
    no_traceback(test)
    table = test.dataframe[0].value
    assert table.loc[table["run"] == "broken", "state"].iloc[0] == "failed: CUDA out of memory"
    assert any("failed: CUDA out of memory" in e for e in texts(test.error))


def test_the_gate_verdict_shows_in_colour_with_its_figures(populated) -> None:
    from core.evaluation.paired import paired_difference
    from core.training.gate import decide

    _, db = populated
    before = np.linspace(0.2, 0.8, 60)
    worse = decide(paired_difference(before, before - 0.1).to_dict(), metric="dim_64_ndcg@10").to_dict()
    runs = RunStore(db)
    runs.start("too-hot", collection_name="shop", config={}, model_path="/nowhere")
    runs.update("too-hot", status="rejected", before_after={"gate": worse}, progress={"step": 30, "total_steps": 30})
    test = page("train")
    no_traceback(test)
    table = test.dataframe[0].value
    assert table.loc[table["run"] == "too-hot", "state"].iloc[0].startswith("rejected: dim_64_ndcg@10 is worse")
    assert table.loc[table["run"] == "too-hot", "verdict"].iloc[0] == "worse"
    assert any(e.startswith("rejected: dim_64_ndcg@10 0.5000 → 0.4000") for e in texts(test.error))


# -- Compare ----------------------------------------------------------------------------------------


def test_compare_page_shows_a_runs_table_forgetting_and_whether_the_axes_were_kept(populated) -> None:
    from core.evaluation.paired import paired_difference
    from core.training.gate import decide

    _, db = populated
    before = np.linspace(0.2, 0.8, 60)
    better = decide(paired_difference(before, before + 0.1).to_dict(), metric="dim_64_ndcg@10").to_dict()
    runs = RunStore(db)
    runs.start("with-axes", collection_name="shop", config={}, model_path="/nowhere")
    runs.update("with-axes", status="finished", before_after={
        "gate": better, "table": "| dim | ndcg@10 before | ndcg@10 after |\n|---|---|---|\n| 64 | 0.3560 | 0.6157 |",
        "forgetting": {"data": "general", "ndcg@10_before": 0.7292, "ndcg@10_after": 0.7207, "delta": -0.0084},
        "prefix_axes": {"kept": True, "reason": "principal axes kept: validation NDCG@10 at 64 d 0.6363 → 0.6819"}})
    test = page("compare")
    no_traceback(test)
    assert any("| 64 | 0.3560 | 0.6157 |" in text for text in texts(test.markdown))
    assert "principal axes kept: validation NDCG@10 at 64 d 0.6363 → 0.6819" in texts(test.caption)
    assert [m.value for m in test.metric if m.label.startswith("Forgetting check (general)")] == ["0.7207"]


def test_compare_opens_on_a_run_against_its_base_on_its_test_split_and_warns_of_training_queries(
        populated, tmp_path: Path, tiny_model_dir: Path) -> None:
    from core.training.config import TrainingConfig
    from core.training.train import train
    from tests.test_heldout import pairs_file

    workspace, db = populated
    data = pairs_file(tmp_path, 40)
    train(TrainingConfig(data=str(data), output_dir=str(workspace.models_dir / "r1"), model=str(tiny_model_dir),
                         epochs=1, batch_size=8, learning_rate=1e-3, max_seq_length=32, forgetting_check=False,
                         device="cpu", matryoshka_dims=[], similarity_anchor=0, run_name="r1"), db=db,
          show_progress=False)
    gate = RunStore(db).get("r1").before_after["gate"]
    test = page("compare")
    assert test.radio(key="compare_mode").value.startswith("A run against its base")
    test.button(key="compare_run_vs_base").click().run()
    no_traceback(test)
    comparison = next(f.value for f in test.dataframe if "verdict" in f.value.columns)
    dimension = int(gate["metric"].split("_")[1])
    row = comparison[(comparison["metric"] == "ndcg@10") & (comparison["dimension"] == dimension)].iloc[0]
    assert (round(row["mean_a"], 4), round(row["mean_b"], 4)) == (round(gate["before"], 4), round(gate["after"], 4))
    assert not test.warning  # its own test split: nothing it trained on

    pairs = tmp_path / "all-queries.csv"
    frame = pd.read_csv(data).rename(columns={"anchor": "query", "positive": "item"}).assign(score=1.0)
    frame.drop(columns=["query_id"]).to_csv(pairs, index=False)
    test.radio(key="compare_mode").set_value("Models on a data set").run()
    test.radio(key="compare_data_kind").set_value("A folder or pairs file").run()
    test.text_input(key="compare_data").input(str(pairs)).run()
    test.multiselect(key="compare_models").set_value(["run:r1"]).run()
    seen = 40 - len(RunStore(db).get("r1").splits["test"]["texts"])
    assert any(w.startswith(f"{seen} of these queries are ones run:r1 trained on") for w in texts(test.warning))
    assert test.checkbox(key="compare_exclude").value  # offered, and on


def _retrieval_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "corpus.csv").write_text("id,text\n" + "".join(f"d{i},document {w}\n" for i, w in enumerate(
        ["chimney", "drill", "hose", "paint", "pipe", "garden"])), encoding="utf-8")
    (folder / "queries.csv").write_text("query_id,query\nq1,chimney\nq2,drill\nq3,hose\n", encoding="utf-8")
    (folder / "qrels.csv").write_text("query_id,item_id,score\nq1,d0,1\nq2,d1,1\nq3,d2,0.5\n", encoding="utf-8")
    return folder


def _russian_queries_folder(tmp_path: Path) -> Path:
    """Russian queries for English products: MiniLM's English vocabulary cuts Cyrillic into letters, the
    multilingual default reads it — two models that really differ on these queries."""
    folder = tmp_path / "ru-en"
    folder.mkdir()
    products = ["Stainless steel chimney pipe", "Cordless drill with two batteries", "Garden hose 20 m",
                "White matt wall paint", "Kitchen faucet with high spout", "Snow shovel", "Wood stove for a sauna",
                "Ceramic floor tiles"]
    queries = ["дымоход", "шуруповерт аккумуляторный", "шланг для полива", "краска для стен", "кран на кухню",
               "лопата для снега", "печь для бани", "плитка на пол"]
    (folder / "corpus.csv").write_text("id,text\n" + "".join(f"d{i},{t}\n" for i, t in enumerate(products)),
                                       encoding="utf-8")
    (folder / "queries.csv").write_text("query_id,query\n" + "".join(f"q{i},{t}\n" for i, t in enumerate(queries)),
                                        encoding="utf-8")
    (folder / "qrels.csv").write_text("query_id,item_id,score\n" + "".join(f"q{i},d{i},1\n" for i in range(8)),
                                      encoding="utf-8")
    return folder


def test_compare_page_shows_a_saved_evaluation_of_two_different_models(populated, tmp_path: Path) -> None:
    from core.evaluation import run_evaluation, save_report

    workspace, db = populated
    report = run_evaluation(_russian_queries_folder(tmp_path), ["minilm", "default"], db=db, regressions_limit=5)
    save_report(report, workspace.reports_dir)
    test = page("compare")
    no_traceback(test)
    frames = [f.value for f in test.dataframe]
    metrics = frames[0].set_index("model")
    assert set(metrics.index) == {"minilm", "default"}
    assert metrics.loc["default", "ndcg@10"] > metrics.loc["minilm", "ndcg@10"]
    comparison = next(f for f in frames if "verdict" in f.columns)
    assert set(comparison.loc[comparison["metric"] == "ndcg@10", "verdict"]) == {"better"}
    specs = [json.loads(chart.proto.spec) for chart in test.get("vega_lite_chart")]
    [by_model] = [spec for spec in specs if "NDCG@10 at 384 dimensions" in json.dumps(spec)]
    assert "bar" in json.dumps(by_model["mark"])  # one dimension: bars per model, not a one-point line


def test_compare_page_evaluates_models_from_the_page(populated, tmp_path: Path, tiny_model_dir: Path) -> None:
    workspace, _ = populated
    test = page("compare", compare_data_kind="A folder or pairs file")
    test.text_input(key="compare_data").input(str(_retrieval_folder(tmp_path))).run()
    test.multiselect(key="compare_models").set_value([])
    test.text_input(key="compare_extra").input(f"{tiny_model_dir},{tiny_model_dir}").run()
    test.button(key="compare_run").click().run()
    no_traceback(test)
    assert any(s.startswith("saved eval-") for s in texts(test.success)), texts(test.error)
    assert len(list(workspace.reports_dir.glob("eval-*.json"))) == 1


def test_compare_page_shows_a_real_llm_bench_and_refuses_other_json(populated, tmp_path: Path, bench_files,
                                                                   tiny_llama_dir: Path, adapter: Path) -> None:
    """The page reads what ``embtune llm bench`` wrote: a tiny Llama against its own LoRA adapter."""
    from core.llmbench.run import run_bench

    results = run_bench(bench_config(bench_files, tiny_llama_dir))
    good = tmp_path / "bench.json"
    good.write_text(json.dumps(results), encoding="utf-8")
    [name] = results["metadata"]["adapters"]
    weakest = min(results["by_category"],
                  key=lambda c: results["by_category"][c][name]["averages"]["domain_relevance"])
    test = page("compare")
    test.text_input(key="compare_llm_path").input(str(good)).run()
    no_traceback(test)
    assert any(i.startswith(f"{name}:") and f"'{weakest}', the weakest category" in i for i in texts(test.info))
    other = tmp_path / "other.json"
    other.write_text("{}", encoding="utf-8")
    test.text_input(key="compare_llm_path").input(str(other)).run()
    no_traceback(test)
    assert any("not an LLM bench result" in e for e in texts(test.error))
    test.text_input(key="compare_llm_path").input(str(tmp_path / "missing.json")).run()
    no_traceback(test)
    assert any("missing.json" in e for e in texts(test.error)), texts(test.error)


# -- Map --------------------------------------------------------------------------------------------


def test_map_places_a_query_and_opens_from_cache_the_second_time(populated) -> None:
    test = page("map", map_method="tsne")
    no_traceback(test)
    assert any(c.startswith("projected") for c in texts(test.caption))
    test.text_input(key="map_query").input("chimney").run()
    no_traceback(test)
    captions = texts(test.caption)
    assert any(c.startswith("from cache") for c in captions)
    [neighbours] = [c for c in captions if c.startswith("Nearest neighbours of the query: ")]
    named = re.findall(r"([a-z ]+) \((-?\d\.\d\d)\)", neighbours.split(": ", 1)[1])
    assert len(named) == 5 and all(name.strip() in ITEM_NAMES for name, _score in named)  # names, not ids
    assert test.selectbox(key="map_colour").value == "category"  # the catalogue's own grouping by default
    assert not any("sample" in c for c in captions)  # 10 items: nothing was sampled


def test_map_shows_base_and_a_finished_run_side_by_side(populated, tiny_model_dir_48: Path) -> None:
    _, db = populated
    runs = RunStore(db)
    runs.start("tuned", collection_name="shop", config={}, model_path=str(tiny_model_dir_48))
    runs.update("tuned", status="finished")
    test = page("map", map_method="tsne", map_second="run:tuned")
    no_traceback(test)
    assert sum(c.startswith(("projected", "from cache")) for c in texts(test.caption)) == 2
    test.text_input(key="map_query").input("drill").run()
    no_traceback(test)
    assert sum(c.startswith("Nearest neighbours") for c in texts(test.caption)) == 2
