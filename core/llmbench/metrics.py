"""Per-response metrics, in a small registry users can extend without editing the runner.

A metric is ``fn(response, prompt, tools) -> float`` registered under a name; the runner
computes every enabled one for base and adapter answers alike. The pairwise similarities
(base vs adapter answer) need both answers and the models, so the runner computes those.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from core.llmbench.suite import Prompt

Metric = Callable[[str, Prompt, dict[str, dict[str, Any]]], float]
METRICS: dict[str, Metric] = {}
RESPONSE_LIMIT = 500  # characters kept of each response (prompt stripped)
RELEVANCE_SATURATION = 0.3  # min(1, found / (0.3 × total)): the original bench's normalisation


def register(name: str) -> Callable[[Metric], Metric]:
    def wrap(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn

    return wrap


def fold(text: str) -> str:
    """Lower-case, accents removed: "Ouvre Chrome" and "ouvré chrome" match."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def clean_response(generated: str, prompt: str) -> str:
    """Strip an echoed prompt and trim to ``RESPONSE_LIMIT`` characters."""
    text = generated.strip()
    if text.startswith(prompt):
        text = text[len(prompt):].strip()
    return text[:RESPONSE_LIMIT]


@register("keyword_match")
def keyword_match(response: str, prompt: Prompt, tools: dict[str, dict[str, Any]]) -> float:
    """Share of the expected keywords found in the answer."""
    folded = fold(response)
    return sum(fold(k) in folded for k in prompt.expected_keywords) / len(prompt.expected_keywords)


@register("domain_relevance")
def domain_relevance(response: str, prompt: Prompt, tools: dict[str, dict[str, Any]]) -> float:
    """Share of the tool dictionary's terms found, saturating at 30 % of them."""
    terms = {fold(term) for tool in tools.values() for term in tool["terms"]}
    if not terms:
        return 0.0
    folded = fold(response)
    found = sum(term in folded for term in terms)
    return min(1.0, found / (RELEVANCE_SATURATION * len(terms)))


_CALL = re.compile(r"\b([a-z_][a-z0-9_]*)\s*\(")


def routed_tool(response: str, tools: dict[str, dict[str, Any]]) -> str | None:
    """The tool an answer routes to: a function-call form ``tool(...)`` first, else a tool name."""
    folded = fold(response)
    for name in _CALL.findall(folded):
        if name in tools:
            return name
    mentioned = [name for name in tools if name in folded]
    return mentioned[0] if mentioned else None


@register("tool_routing")
def tool_routing(response: str, prompt: Prompt, tools: dict[str, dict[str, Any]]) -> float:
    """1 when the answer routes to the expected tool."""
    if not prompt.expected_tool:
        return 0.0
    return float(routed_tool(response, tools) == prompt.expected_tool)
