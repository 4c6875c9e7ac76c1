"""sentence-transformers' ONNX and OpenVINO backends: loading, exporting into the model folder, `embtune export`.

This file runs in three environments (see the Makefile): the main .venv (torch only: the backend tests skip,
naming the target that runs them), .venv-openvino and .venv-onnx (`make test-backends`), where
EMBTUNE_REQUIRE_BACKEND turns the skip of that environment's backend into a failure. Speed is never asserted here
(benchmarks/backends.py measures it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_csv

REQUIRED = os.environ.get("EMBTUNE_REQUIRE_BACKEND", "")
TEXTS = ["chimney pipe", "garden hose", "cordless drill", "paint", "труба дымоход", "drill 18v", "hose reel",
         "white paint", "steel pipe", "garden drill"]


def engine_or_skip(engine: str) -> None:
    from core.embedders.backends import engine_status

    ok, why = engine_status(engine)
    if ok:
        return
    if engine == REQUIRED:
        pytest.fail(f"EMBTUNE_REQUIRE_BACKEND={engine} but the {engine} backend cannot load: {why}")
    pytest.skip(f"{engine} extra not installed here ({why}); `make test-backends` runs this in .venv-{engine}")


@pytest.fixture(scope="session")
def tiny_backend_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's tiny model; in .venv-onnx (transformers 4.57, whose BERT tokenizer takes no vocab dict) the same
    model built from a vocab file."""
    import transformers

    from tests.conftest import _VOCAB, build_tiny_model

    folder = tmp_path_factory.mktemp("tiny")
    if int(transformers.__version__.split(".")[0]) >= 5:
        return build_tiny_model(folder)
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer

    hf_folder = folder / "hf"
    hf_folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(hf_folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(_VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    transformers.BertModel(config).save_pretrained(hf_folder)
    model = SentenceTransformer(modules=[Transformer(str(hf_folder), max_seq_length=64), Pooling(32, "mean")],
                                device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture()
def tiny_copy(tiny_backend_model: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model: exports are written into the model folder."""
    return Path(shutil.copytree(tiny_backend_model, tmp_path / "tiny"))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", a, b)  # rows are L2-normalised by the embedders


# -- without any extra ------------------------------------------------------------------------------


def test_backend_names_parse_and_unknown_ones_are_refused() -> None:
    from core.embedders.backends import parse_backend
    from core.errors import EmbtuneError

    assert parse_backend(None).name == "torch"
    assert parse_backend("openvino", "int8").name == "openvino-int8"
    assert parse_backend("ONNX-int8") == parse_backend("onnx", "int8")
    for bad, quantize in (("tensorrt", None), ("onnx-int4", None), ("onnx", "fp8"), ("torch", "int8")):
        with pytest.raises(EmbtuneError):
            parse_backend(bad, quantize)


# Flag lines as Linux prints them: an AVX2-only EPYC (this project's CI machine) and a Xeon with AVX-512 VNNI and AMX.
AVX2_ONLY_FLAGS = ("flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx "
                   "fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm rep_good nopl cpuid extd_apicid "
                   "tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c "
                   "rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw "
                   "topoext ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap "
                   "clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero xsaveerptr wbnoinvd arat umip vaes "
                   "vpclmulqdq rdpid fsrm\n")
VNNI_FLAGS = ("flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep avx f16c avx2 bmi2 avx512f avx512dq avx512cd "
              "avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n")


def test_int8_support_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    from core.embedders.backends import int8_dot_product_support

    avx2, vnni = tmp_path / "avx2", tmp_path / "vnni"
    avx2.write_text(AVX2_ONLY_FLAGS * 2)
    vnni.write_text(VNNI_FLAGS * 2)
    assert int8_dot_product_support(avx2) is False
    assert int8_dot_product_support(vnni) is True
    assert int8_dot_product_support(tmp_path / "missing") is None  # not Linux: unknown, never a false warning


def test_backend_prefix_round_trips_through_a_spec() -> None:
    from core.embedders.backends import backend_spec, split_backend_spec

    assert backend_spec("default", "openvino") == "openvino:default"
    assert backend_spec("openvino:default", "torch") == "default"
    assert split_backend_spec("onnx-int8:/models/x") == ("onnx-int8", "/models/x")
    assert split_backend_spec("clip:ViT-B-32/openai") == (None, "clip:ViT-B-32/openai")
    assert split_backend_spec("C:\\models\\x") == (None, "C:\\models\\x")


def test_a_backend_the_environment_lacks_is_one_line_naming_how_to_get_it(tiny_copy: Path) -> None:
    from core.embedders import load_embedder
    from core.embedders.backends import engine_status
    from core.errors import ModelLoadError

    missing = [engine for engine in ("onnx", "openvino") if not engine_status(engine)[0]]
    if not missing:
        pytest.skip("both extras are installed here")
    with pytest.raises(ModelLoadError, match="make backend-envs") as caught:
        load_embedder(f"{missing[0]}:{tiny_copy}")
    assert "\n" not in str(caught.value)
    assert not (tiny_copy / missing[0]).exists()  # nothing was written


def _imports(*modules: str) -> bool:
    import importlib

    try:
        for module in modules:
            importlib.import_module(module)
    except Exception:
        return False
    return True


def test_check_setup_lists_the_backends_that_can_load() -> None:
    """What this environment can import decides the expected list (it differs between .venv, .venv-onnx and
    .venv-openvino), not the code under test."""
    from core.setup_check import backends_check

    onnx = _imports("onnxruntime", "optimum.onnxruntime")
    openvino = _imports("openvino", "optimum.intel.openvino")
    expected = ["torch", *(["onnx", "onnx-int8"] if onnx else []), *(["openvino", "openvino-int8"] if openvino else [])]
    check = backends_check()
    listed, _, missing = check.detail.partition(" (not here: ")
    assert check.name == "backends" and listed.split(", ") == expected
    assert ("onnx:" in missing) is not onnx and ("openvino:" in missing) is not openvino


def test_export_of_a_folder_that_is_not_a_sentence_transformers_model_is_one_line(run_cli, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "config.json").write_text("{}")
    result = run_cli("export", str(stranger), "--format", "openvino")
    assert result.code == 1
    assert result.err.strip().count("\n") == 0 and "not a sentence-transformers model folder" in result.err
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    result = run_cli("export", str(adapter), "--format", "onnx")
    assert result.code == 1 and "merge it first" in result.err
    result = run_cli("export", str(stranger), "--format", "tensorrt")
    assert result.code == 1 and "is not one of" in result.err


# -- with the extra ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino"])
def test_backend_embeds_like_torch_and_saves_its_files_in_the_model_folder(backend: str, tiny_copy: Path) -> None:
    from core.embedders import load_embedder

    engine_or_skip(backend.split("-")[0])
    reference = load_embedder(str(tiny_copy), cache=False, fallback=False)
    served = load_embedder(str(tiny_copy), backend=backend, cache=False, fallback=False)
    assert served.backend == backend and served.spec == f"{backend}:{tiny_copy}"
    assert served.model_file is not None and served.model_file.is_relative_to(tiny_copy)
    assert served.fingerprint != reference.fingerprint
    agreement = cosines(reference.encode(TEXTS), served.encode(TEXTS))
    assert agreement.min() > (0.9 if backend.endswith("int8") else 0.9999), agreement


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_second_load_finds_the_export_and_does_not_export_again(backend: str, tiny_copy: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from core.embedders import backends, load_embedder

    engine_or_skip(backend)
    first = load_embedder(f"{backend}:{tiny_copy}", cache=False, reuse=False)
    stamp = first.model_file.stat().st_mtime_ns

    def refuse(*_args, **_kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(backends, "export_backend", refuse)
    second = load_embedder(f"{backend}:{tiny_copy}", cache=False, reuse=False)
    assert second.model_file == first.model_file and second.model_file.stat().st_mtime_ns == stamp
    assert second.fingerprint == first.fingerprint
    assert not list(tiny_copy.glob(".export-*"))  # the staging folder is gone


def test_openvino_int8_without_calibration_texts_says_how_to_give_them(tiny_copy: Path) -> None:
    from core.embedders import load_embedder
    from core.errors import EmbtuneError

    engine_or_skip("openvino")
    with pytest.raises(EmbtuneError, match="--calibration FILE"):
        load_embedder(f"openvino-int8:{tiny_copy}")


def test_collection_remembers_its_backend(tiny_copy: Path, workspace_dir: Path, tmp_path: Path, run_cli) -> None:
    engine = "openvino" if REQUIRED != "onnx" else "onnx"
    engine_or_skip(engine)
    table = write_csv(tmp_path / "items.csv", [["id", "name"]] + [[str(i), t] for i, t in enumerate(TEXTS)])
    result = run_cli("index", str(table), "--collection", "fast", "--text-column", "name", "--id-column", "id",
                     "--model", str(tiny_copy), "--backend", engine)
    assert result.code == 0, result.err
    listed = run_cli("collections", "--json")
    assert f'"{engine}:{tiny_copy}' in listed.out
    found = run_cli("search", "fast", "garden hose", "-k", "1")
    assert found.code == 0 and "garden hose" in found.out


# -- embtune export on the bundled model (integration) -------------------------------------------------


def bundled_package_files() -> set[str]:
    from core.embedders.registry import known_model

    folder = known_model("minilm").package_folder()
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.integration
@pytest.mark.parametrize(("export_format", "quantize"), [("openvino", None), ("openvino", "int8"), ("onnx", "int8")])
def test_export_bundled_model_evaluates_it_against_torch_and_records_it(export_format: str, quantize: str | None,
                                                                        run_cli, workspace_dir: Path,
                                                                        tmp_path: Path) -> None:
    from storage.db import Database
    from storage.tables import EvaluationRecord
    from storage.workspace import Workspace

    engine_or_skip(export_format)
    package_before = bundled_package_files()
    calibration = write_csv(tmp_path / "calibration.csv", [["text"]] + [[t] for t in TEXTS * 3])
    # MiniLM, the packaged folder (half the default's layers): this checks the export plumbing, not the model.
    args = ["export", "minilm", "--format", export_format, "--json", str(tmp_path / "report.json")]
    args += ["--quantize", quantize] if quantize else []
    args += ["--calibration", str(calibration)] if export_format == "openvino" and quantize else []
    result = run_cli(*args)
    assert result.code == 0, result.err
    backend = f"{export_format}-{quantize}" if quantize else export_format
    assert f"{backend} vs torch on catalogue" in result.out and "| 384 |" in result.out
    assert "× torch" in result.out
    if backend == "openvino-int8":
        assert f"calibrated on {calibration}" in result.out
    # int8 on a CPU without int8 dot-product instructions is slower than fp32: the export says so
    from core.embedders.backends import int8_dot_product_support

    warned = "no int8 dot-product instructions" in result.err
    assert warned == (quantize is not None and int8_dot_product_support() is False), result.err
    models = Workspace.open(workspace_dir).models_dir
    assert list(models.glob(f"bundled-*/{export_format}/*.xml" if export_format == "openvino"
                            else f"bundled-*/{export_format}/*.onnx"))
    assert bundled_package_files() == package_before  # nothing written into site-packages

    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["backend"] == backend and report["speed_original"] > 0 and report["speed_exported"] > 0
    # fp32 OpenVINO is the same function as torch; int8 moves a little
    assert abs(report["delta"]["384"]) < (0.001 if not quantize else 0.05)
    with Database(Workspace.open(workspace_dir).default_db_url).session() as session:
        specs = sorted(r.model_spec for r in session.query(EvaluationRecord))
    assert specs[0] == "minilm" and specs[1].startswith(f"{backend}:")

    again = run_cli("export", "minilm", "--format", export_format, *(["--quantize", quantize] if quantize else []))
    assert again.code == 0 and again.out.startswith(f"reused {backend}")


# -- runs and collections ---------------------------------------------------------------------------


def _pairs(tmp_path: Path) -> Path:
    rows = [["query", "item", "score"]]
    for text in TEXTS:
        rows += [[f"{text} please", text, "1"], [f"need {text}", text, "1"]]
    return write_csv(tmp_path / "pairs.csv", rows)


def _finished_run(db, name: str, model: Path, data: Path, collection: str | None = None) -> None:
    from storage.runs import RunStore

    runs = RunStore(db)
    runs.start(name, collection_name=collection, model_path=str(model),
               config={"data": str(data), "output_dir": str(model), "test_fraction": 0.5, "validation_fraction": 0.0,
                       "matryoshka_dims": [32, 16]})
    runs.update(name, status="finished", before_after={"table": "kept"})


def test_export_of_a_run_uses_its_test_split_and_dimensions_and_is_kept_with_it(tiny_copy: Path, tmp_path: Path,
                                                                             workspace_dir: Path) -> None:
    from core.export import export_model
    from storage.db import Database
    from storage.runs import RunStore
    from storage.workspace import Workspace

    engine = "openvino" if REQUIRED != "onnx" else "onnx"
    engine_or_skip(engine)
    workspace = Workspace.open(workspace_dir)
    db = Database(workspace.default_db_url)
    _finished_run(db, "tiny-run", tiny_copy, _pairs(tmp_path))
    report = export_model("run:tiny-run", format=engine, db=db, workspace=workspace)
    assert report.run_name == "tiny-run" and report.data_name == "test" and report.dimensions == [32, 16]
    assert report.within_tolerance and not report.warnings
    assert Path(report.model_file).is_relative_to(tiny_copy)
    kept = RunStore(db).get("tiny-run").before_after
    assert kept["table"] == "kept" and kept["exports"][0]["backend"] == engine


def test_export_that_loses_too_much_warns_with_the_loss_and_the_collection_keeps_its_model(
        tiny_copy: Path, tmp_path: Path, workspace_dir: Path) -> None:
    from core.collection.named import index_file
    from core.export import export_model
    from storage.db import Database
    from storage.workspace import Workspace

    engine = "openvino" if REQUIRED != "onnx" else "onnx"
    engine_or_skip(engine)
    workspace = Workspace.open(workspace_dir)
    db = Database(workspace.default_db_url)
    table = write_csv(tmp_path / "items.csv", [["id", "name"]] + [[str(i), t] for i, t in enumerate(TEXTS)])
    index_file(table, collection="shop", text_column="name", id_column="id", model=str(tiny_copy),
               workspace=workspace, db=db)
    pairs = _pairs(tmp_path)
    # A tolerance below zero plants a "loss" no export can stay within: the decision path, not the numbers.
    refused = export_model(str(tiny_copy), format=engine, data=pairs, collection="shop", tolerance=-1.0, db=db,
                           workspace=workspace)
    assert not refused.collection_switched and "NDCG@10 points" in refused.warnings[0]
    assert "keeps it" in refused.warnings[0]
    assert db.get_collection("shop").model_spec == str(tiny_copy)
    accepted = export_model(str(tiny_copy), format=engine, data=pairs, collection="shop", db=db, workspace=workspace)
    assert accepted.collection_switched and accepted.reused
    assert db.get_collection("shop").model_spec == f"{engine}:{tiny_copy}"


# -- folders the main environment wrote, read by .venv-onnx's older libraries ------------------------

# Run by the main environment's python: a tiny model saved the way embtune saves the converted default and every
# run there (sentence-transformers 6, transformers 5, a tokenizer.json behind a generic fast tokenizer, Normalize),
# and its vectors for TEXTS.
_SAVE_IN_MAIN_ENVIRONMENT = """
import json, sys
from pathlib import Path
import numpy as np, torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from transformers import BertConfig, BertModel, BertTokenizerFast, PreTrainedTokenizerFast
from tests.conftest import _VOCAB

folder, texts = Path(sys.argv[1]), json.loads(sys.argv[2])
hf = folder / "hf"
bert = BertTokenizerFast(vocab={token: i for i, token in enumerate(_VOCAB)}, do_lower_case=True)
PreTrainedTokenizerFast(tokenizer_object=bert.backend_tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]").save_pretrained(hf)
torch.manual_seed(0)
BertModel(BertConfig(vocab_size=len(_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)).save_pretrained(hf)
model = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=64), Pooling(32, "mean"), Normalize()],
                            device="cpu")
model.save(str(folder / "model"))
np.save(folder / "vectors.npy", model.encode(texts))
print(json.loads((folder / "model" / "tokenizer_config.json").read_text())["tokenizer_class"])
"""


def test_a_folder_the_main_environment_saved_loads_here_with_the_same_vectors(tmp_path: Path) -> None:
    """The converted default and every training run are saved by the main environment; .venv-onnx (transformers
    4.57) failed on them with "Unrecognized processing class" (core/embedders/compat.py)."""
    import json
    import subprocess

    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        pytest.skip("the libraries here are as new as the main environment's; .venv-onnx runs this")
    root = Path(__file__).resolve().parents[1]
    main_python = root / ".venv" / "bin" / "python"
    if not main_python.exists():
        pytest.fail(f"{main_python} is missing: `make test` builds it before the backend environments")
    saved = subprocess.run([str(main_python), "-c", _SAVE_IN_MAIN_ENVIRONMENT, str(tmp_path), json.dumps(TEXTS)],
                           cwd=root, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert saved.returncode == 0, saved.stderr[-2000:]
    assert saved.stdout.split()[-1] == "TokenizersBackend"  # the name transformers 4.57 does not know
    from core.embedders import load_embedder

    embedder = load_embedder(str(tmp_path / "model"), device="cpu", cache=False)
    np.testing.assert_allclose(embedder.encode(TEXTS), np.load(tmp_path / "vectors.npy"), atol=1e-5)
