"""``BenchConfig``: one LLM A/B benchmark (base vs LoRA adapters), from JSON, stored with its results.

Sections mirror what a user decides: ``model``, ``generation``, ``benchmark``, ``metrics``,
``output``, ``logging``. Unknown keys and wrong types are refused by pydantic with the key's full
path (``generation.temperature``), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from core.configs import EmbtuneConfig


class Section(BaseModel):
    """A section of the bench config: strict types (``"many"`` is not a number, ``1`` not a bool)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ModelSection(Section):
    base: str = "smollm2"
    """Hugging Face causal LM id, a local folder, or ``smollm2`` (the offline SmolLM2-135M-Instruct GGUF)."""
    adapters: list[str] | str = Field(default_factory=list)
    """Adapter folders, or ``auto``: the newest folder under ``adapters_dir`` with adapter_config.json + weights."""
    adapters_dir: str = "."
    quantization: Literal["none", "4bit"] = "none"
    """none, or 4bit (bitsandbytes NF4, double quantisation, bf16 compute); falls back with a warning."""
    device_map: Literal["auto", "cpu"] = "auto"
    """auto (all GPUs, else CPU) or cpu."""


class GenerationSection(Section):
    max_new_tokens: PositiveInt = 128
    temperature: Annotated[float, Field(ge=0)] = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.9
    do_sample: bool = True
    seed: int = 42
    timeout_s: PositiveFloat = 30.0


class BenchmarkSection(Section):
    suite: str = "default"
    """A suite JSON/YAML file, or ``default`` (30 French assistant prompts in 3 categories)."""
    tools: str = "default"
    """A tool dictionary JSON, or ``default`` (13 tools with French terms)."""
    categories: list[str] = Field(default_factory=list)
    """Run only these categories; empty: all."""


class MetricsSection(Section):
    keyword_match: bool = True
    domain_relevance: bool = True
    hidden_similarity: bool = True
    embedding_similarity: bool = True
    tool_routing: bool = True
    latency: bool = True
    embedder: str = "default"
    """The embtune embedder used for the response-embedding similarity."""


class OutputSection(Section):
    dir: str = "llmbench-results"
    json_name: str = "results.json"


class LoggingSection(Section):
    verbosity: Literal["debug", "info", "warning", "error"] = "info"
    show_gpu_memory: bool = True
    timings: bool = True


class BenchConfig(EmbtuneConfig):
    """Unknown keys and wrong types are refused with the key's full path (``generation.temperature``)."""

    _label: ClassVar[str] = "bench config"

    model: ModelSection = Field(default_factory=ModelSection)
    generation: GenerationSection = Field(default_factory=GenerationSection)
    benchmark: BenchmarkSection = Field(default_factory=BenchmarkSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    output: OutputSection = Field(default_factory=OutputSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    @classmethod
    def from_file(cls, path: str | Path) -> BenchConfig:
        return cls.from_json(path)
