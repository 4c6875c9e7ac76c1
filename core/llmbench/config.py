"""``BenchConfig``: one LLM A/B benchmark (base vs LoRA adapters), from JSON, stored with its results.

Sections mirror what a user decides: ``model``, ``generation``, ``benchmark``, ``metrics``,
``output``, ``logging``. Unknown keys and wrong types are refused with the key's full path
(``generation.temperature``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError


@dataclass
class ModelSection:
    base: str = "smollm2"
    """Hugging Face causal LM id, a local folder, or ``smollm2`` (the offline SmolLM2-135M-Instruct GGUF)."""
    adapters: list[str] | str = field(default_factory=list)
    """Adapter folders, or ``auto``: the newest folder under ``adapters_dir`` with adapter_config.json + weights."""
    adapters_dir: str = "."
    quantization: str = "none"
    """none, or 4bit (bitsandbytes NF4, double quantisation, bf16 compute); falls back with a warning."""
    device_map: str = "auto"
    """auto (all GPUs, else CPU) or cpu."""


@dataclass
class GenerationSection:
    max_new_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.9
    do_sample: bool = True
    seed: int = 42
    timeout_s: float = 30.0


@dataclass
class BenchmarkSection:
    suite: str = "default"
    """A suite JSON/YAML file, or ``default`` (30 French assistant prompts in 3 categories)."""
    tools: str = "default"
    """A tool dictionary JSON, or ``default`` (13 tools with French terms)."""
    categories: list[str] = field(default_factory=list)
    """Run only these categories; empty: all."""


@dataclass
class MetricsSection:
    keyword_match: bool = True
    domain_relevance: bool = True
    hidden_similarity: bool = True
    embedding_similarity: bool = True
    tool_routing: bool = True
    latency: bool = True
    embedder: str = "default"
    """The embtune embedder used for the response-embedding similarity."""


@dataclass
class OutputSection:
    dir: str = "llmbench-results"
    json_name: str = "results.json"


@dataclass
class LoggingSection:
    verbosity: str = "info"
    show_gpu_memory: bool = True
    timings: bool = True


SECTIONS = {"model": ModelSection, "generation": GenerationSection, "benchmark": BenchmarkSection,
            "metrics": MetricsSection, "output": OutputSection, "logging": LoggingSection}


@dataclass
class BenchConfig:
    model: ModelSection = field(default_factory=ModelSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    benchmark: BenchmarkSection = field(default_factory=BenchmarkSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    output: OutputSection = field(default_factory=OutputSection)
    logging: LoggingSection = field(default_factory=LoggingSection)

    def __post_init__(self) -> None:
        if self.model.quantization not in ("none", "4bit"):
            raise EmbtuneError(f"model.quantization={self.model.quantization!r} is not allowed: none or 4bit")
        if self.model.device_map not in ("auto", "cpu"):
            raise EmbtuneError(f"model.device_map={self.model.device_map!r} is not allowed: auto or cpu")
        if self.logging.verbosity not in ("debug", "info", "warning", "error"):
            raise EmbtuneError(f"logging.verbosity={self.logging.verbosity!r} is not allowed: debug, info, warning "
                               "or error")
        gen = self.generation
        if gen.max_new_tokens <= 0:
            raise EmbtuneError(f"generation.max_new_tokens={gen.max_new_tokens} must be positive")
        if not 0 < gen.top_p <= 1 or gen.temperature < 0 or gen.timeout_s <= 0:
            raise EmbtuneError("generation: top_p must be in (0, 1], temperature ≥ 0 and timeout_s > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> BenchConfig:
        unknown = sorted(set(payload) - set(SECTIONS))
        if unknown:
            raise EmbtuneError(f"bench config: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})")
        sections = {}
        for name, section_type in SECTIONS.items():
            values = payload.get(name, {})
            if not isinstance(values, dict):
                raise EmbtuneError(f"bench config: {name} must be an object")
            known = {f.name: f for f in fields(section_type)}
            hints = typing.get_type_hints(section_type)
            for key, value in values.items():
                if key not in known:
                    raise EmbtuneError(f"bench config: unknown key {name}.{key} (known: {', '.join(known)})")
                if not _matches(value, hints[key]):
                    raise EmbtuneError(f"bench config: {name}.{key}={value!r} has the wrong type "
                                       f"(expected {_type_name(hints[key])})")
            sections[name] = section_type(**values)
        return cls(**sections)

    @classmethod
    def from_file(cls, path: str | Path) -> BenchConfig:
        from core.data.formats import read_json_file

        return cls.from_dict(read_json_file(path))


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, option) for option in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
