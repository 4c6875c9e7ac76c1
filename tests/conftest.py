"""Shared fixtures: tiny models built in the test, the bundled model loaded once, the CLI in-process."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# No standby training worker per studio page render (tests/test_launcher.py turns one on where it checks it).
os.environ.setdefault("EMBTUNE_STANDBY_WORKER", "0")

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "core" / "data" / "catalogue"
SHARED_DATA = REPO.parent / "shared" / "data"

_VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789")
    + list("абвгдежзийклмнопрстуфхцчшщъыьэюя")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789абвгдежзийклмнопрстуфхцчшщъыьэюя"]
    + ["chimney", "pipe", "drill", "garden", "hose", "paint", "труба", "дымоход", ".", ",", "-", "/"]
)


COMPLETED = ("finished", "not proven", "rejected")
"""A run that trained to the end: the gate decided (a tiny random model's verdict is whatever it is)."""


def build_tiny_model(folder: Path, *, hidden_size: int = 32, seed: int = 0) -> Path:
    """A real sentence-transformers folder (BERT, mean pooling) with random weights.

    Random weights test plumbing, never quality; the bundled model is used for behaviour.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    hf_folder = folder / "hf"
    hf_folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(_VOCAB)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(_VOCAB), hidden_size=hidden_size, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=hidden_size * 2, max_position_embeddings=128)
    BertModel(config).save_pretrained(hf_folder)
    tokenizer.save_pretrained(hf_folder)
    transformer = Transformer(str(hf_folder), max_seq_length=64)
    model = SentenceTransformer(modules=[transformer, Pooling(hidden_size, pooling_mode="mean")], device="cpu")
    out = folder / "st"
    model.save(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_model_dir_48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny model with a different dimension, for mismatch tests."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny48"), hidden_size=48, seed=1)


@pytest.fixture(scope="session", autouse=True)
def converted_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the converted default (multilingual-e5-small) across the session: every test's workspace
    would otherwise convert it again. Converted on first use, as for a user; subprocesses inherit the variable."""
    from core.embedders.registry import ENV_CONVERTED_MODELS

    folder = Path(os.environ.get(ENV_CONVERTED_MODELS) or tmp_path_factory.mktemp("converted-models"))
    os.environ[ENV_CONVERTED_MODELS] = str(folder)
    return folder


@pytest.fixture(scope="session")
def minilm_embedder():
    """all-MiniLM-L6-v2: half the layers of the default, for tests where only the plumbing matters."""
    from core.embedders import load_embedder

    return load_embedder("minilm", device="cpu", fallback=False)


@pytest.fixture(scope="session")
def bundled_embedder():
    from core.embedders import load_embedder

    return load_embedder("default", device="cpu", fallback=False)


@pytest.fixture()
def workspace_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "workspace"
    monkeypatch.setenv("EMBTUNE_HOME", str(folder))
    monkeypatch.delenv("EMBTUNE_DB", raising=False)
    return folder


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture()
def run_cli(capsys: pytest.CaptureFixture[str], workspace_dir: Path) -> Callable[..., CliResult]:
    """Run ``embtune ARGS`` in-process, the way the console script does (errors included)."""
    from embtune.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def seed_training_speed(workspace: Any, model: str = "default") -> None:
    """The Train page measures this machine's speed for a model with a few real training steps when no earlier
    run tells it; page tests that do not test that measurement give it a known figure instead."""
    from core.training.config import TrainingConfig
    from core.training.cost import remember_speed

    remember_speed(workspace.runs_dir / "speed.json", TrainingConfig(data="d", output_dir="o", model=model,
                                                                     batch_size=32), 3.2, "a test's figure")


def free_port() -> int:
    """A free loopback port for a server a test starts (and stops)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture()
def python_executable() -> str:
    return sys.executable


CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A Llama-architecture causal LM with random weights and a byte-level BPE tokenizer with a chat template."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = ["ouvre chrome", "ferme la fenêtre", "monte le son", "open_app(name=chrome)", "volume_up()",
              "J'ouvre Chrome.", "Tu es un assistant vocal.", "quel temps fait-il à Lyon"] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1,
                            special_tokens=["<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|end|>", pad_token="<|pad|>",
                                        bos_token="<|end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("llama"))


TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def build_tiny_clip(folder: Path, *, embed_dim: int = 32, seed: int = 0) -> Path:
    """An open_clip CLIP (tiny vision + text towers, random weights) saved in the ``clip:FOLDER`` layout."""
    import copy

    import open_clip
    import torch

    from core.embedders import save_clip_folder

    config = copy.deepcopy(TINY_CLIP_CONFIG)
    config["embed_dim"] = embed_dim
    torch.manual_seed(seed)
    return save_clip_folder(open_clip.CLIP(**config), config, folder)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tinyclip"))


class MatchReader:
    """Keeps calling ``tuner.match(probe)`` in a thread, recording (model fingerprint, best score).

    The background fine-tuner's promise is that lookups never wait for a training and never see a
    half-swapped model; the tests hold a training open and read through it with this.
    """

    def __init__(self, tuner, probe) -> None:
        import threading

        self.answers: list[tuple[str | None, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(tuner, probe), daemon=True)
        self._thread.start()

    def _read(self, tuner, probe) -> None:
        while not self._stop.is_set():
            result = tuner.match(probe, k=3)
            self.answers.append((result.model_fingerprint, result.best.score))

    def wait_for(self, count: int, timeout: float = 20) -> list[tuple[str | None, float]]:
        """The answers once ``count`` arrived (or the timeout passed): a copy, safe to assert on."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.answers) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.answers)

    def stop_after(self, fingerprint: str, timeout: float = 20) -> list[tuple[str | None, float]]:
        """Keep reading until an answer comes from ``fingerprint`` (the swapped-in model), then stop."""
        import time

        deadline = time.monotonic() + timeout
        while (not self.answers or self.answers[-1][0] != fingerprint) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(10)
        return list(self.answers)


# -- the LLM bench on a tiny Llama (tests/test_llmbench.py, the studio's Compare page) ---------------

TOOLS = {"open_app": {"terms": ["ouvre", "chrome", "application"]}, "volume_up": {"terms": ["volume", "son"]},
         "close_app": {"terms": ["ferme", "fenêtre"]}}
SUITE = {"name": "t", "system_prompt": "Tu es un assistant vocal.", "categories": {
    "commands": [{"id": "c1", "prompt": "ouvre chrome", "expected_keywords": ["chrome"],
                  "expected_tool": "open_app"},
                 {"id": "c2", "prompt": "ferme la fenêtre", "expected_keywords": ["ferme"],
                  "expected_tool": "close_app"}],
    "routing": [{"id": "r1", "prompt": "monte le son", "expected_keywords": ["volume"], "expected_tool": "volume_up"},
                {"id": "r2", "prompt": "le son plus fort", "expected_keywords": ["son"],
                 "expected_tool": "volume_up"}]}}


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    (folder / "suite.json").write_text(json.dumps(SUITE, ensure_ascii=False), encoding="utf-8")
    (folder / "tools.json").write_text(json.dumps({"tools": TOOLS}, ensure_ascii=False), encoding="utf-8")
    (folder / "train.jsonl").write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in [
        {"prompt": "ouvre firefox", "response": "J'ouvre Firefox. open_app(name=firefox)"},
        {"prompt": "monte le volume", "response": "Je monte le son. volume_up()"},
        {"prompt": "ferme tout", "response": "Je ferme la fenêtre. close_app()"},
        {"prompt": "ouvre chrom", "response": "J'ouvre Chrome. open_app(name=chrome)"}] * 3), encoding="utf-8")
    return {"suite": folder / "suite.json", "tools": folder / "tools.json", "train": folder / "train.jsonl",
            "adapters": folder / "adapters"}


@pytest.fixture(scope="module")
def adapter(bench_files: dict[str, Path], tiny_llama_dir: Path) -> Path:
    from core.llmbench.train_lora import train_lora

    result = train_lora(str(tiny_llama_dir), bench_files["adapters"] / "first", data=bench_files["train"],
                        epochs=2, learning_rate=5e-3, r=4, alpha=8, suite=str(bench_files["suite"]))
    assert result.trainable_parameters > 0 and result.steps > 0 and result.final_loss is not None
    time.sleep(0.05)
    newest = train_lora(str(tiny_llama_dir), bench_files["adapters"] / "second", data=bench_files["train"],
                        epochs=1, learning_rate=5e-3, r=4, alpha=8, suite=str(bench_files["suite"]))
    return Path(newest.output_dir)


def bench_config(files: dict[str, Path], base: Path, **sections: dict) -> Any:
    """A ``BenchConfig`` for the tiny Llama on the test suite, with ``sections`` overriding its values."""
    from core.llmbench.config import BenchConfig

    payload = {"model": {"base": str(base), "adapters": "auto", "adapters_dir": str(files["adapters"]),
                         "device_map": "cpu"},
               "generation": {"max_new_tokens": 12, "seed": 1},
               "benchmark": {"suite": str(files["suite"]), "tools": str(files["tools"])}}
    for name, values in sections.items():
        payload.setdefault(name, {}).update(values)
    return BenchConfig.from_dict(payload)
