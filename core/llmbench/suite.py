"""Prompt suites and tool dictionaries: data a user edits, never code.

A suite maps categories to prompts, each with the keywords a good answer contains and,
where it applies, the tool it should route to. The tool dictionary names each tool with the
terms that show an answer is about it (for the domain-relevance metric). JSON or YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.data.formats import read_json_file
from core.errors import DataError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_SUITE = DATA_DIR / "default_suite.json"
DEFAULT_TOOLS = DATA_DIR / "tools_fr.json"
DEFAULT_TRAIN = DATA_DIR / "train_fr.jsonl"


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    prompt: str
    expected_keywords: list[str]
    expected_tool: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    system_prompt: str
    prompts: list[Prompt]

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(p.category for p in self.prompts))


def load_tools(spec: str = "default") -> dict[str, dict[str, Any]]:
    path = DEFAULT_TOOLS if spec == "default" else Path(spec)
    payload = read_json_file(path, expect_object=False)
    tools = payload.get("tools") if isinstance(payload, dict) else None
    if not isinstance(tools, dict) or not tools:
        raise DataError(f"{path}: expected {{\"tools\": {{name: {{\"terms\": [...]}}}}}}")
    for name, tool in tools.items():
        if not isinstance(tool, dict) or not tool.get("terms"):
            raise DataError(f"{path}: tool {name!r} has no terms")
    return tools


def load_suite(spec: str = "default", *, categories: list[str] | None = None,
               tools: dict[str, dict[str, Any]] | None = None) -> Suite:
    """Load and check a suite: every prompt needs keywords, every expected tool must be known."""
    path = DEFAULT_SUITE if spec == "default" else Path(spec)
    payload = read_json_file(path, expect_object=False)
    if not isinstance(payload, dict) or not isinstance(payload.get("categories"), dict):
        raise DataError(f"{path}: expected an object with 'categories': {{name: [prompts]}}")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for category, items in payload["categories"].items():
        if categories and category not in categories:
            continue
        if not isinstance(items, list):
            raise DataError(f"{path}: category {category!r} must be a list of prompts")
        for position, item in enumerate(items, start=1):
            where = f"{path}: {category} prompt #{position}"
            if not isinstance(item, dict) or not str(item.get("prompt", "")).strip():
                raise DataError(f"{where} has no 'prompt' text")
            prompt_id = str(item.get("id") or f"{category}-{position}")
            where = f"{path}: {category}/{prompt_id}"
            if prompt_id in seen:
                raise DataError(f"{where}: id is used twice")
            seen.add(prompt_id)
            keywords = item.get("expected_keywords")
            if not isinstance(keywords, list) or not [k for k in keywords if str(k).strip()]:
                raise DataError(f"{where} ({item['prompt']!r}) has no expected_keywords")
            tool = item.get("expected_tool")
            if tool and tools is not None and tool not in tools:
                raise DataError(f"{where}: expected_tool {tool!r} is not in the tool dictionary")
            extra = {k: v for k, v in item.items() if k not in ("id", "prompt", "expected_keywords", "expected_tool")}
            prompts.append(Prompt(prompt_id, category, str(item["prompt"]), [str(k) for k in keywords], tool, extra))
    if categories:
        missing = [c for c in categories if c not in payload["categories"]]
        if missing:
            raise DataError(f"{path}: no category {missing[0]!r} (categories: {', '.join(payload['categories'])})")
    if not prompts:
        raise DataError(f"{path}: no prompts to run")
    return Suite(str(payload.get("name", path.stem)), str(payload.get("system_prompt", "")), prompts)
