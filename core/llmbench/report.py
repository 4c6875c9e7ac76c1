"""Reading a bench result: a text report with recommendations and a 2×2 figure (300 dpi PNG).

Thresholds are the original bench's: a relevance gain above 10 % is effective, 5–10 %
moderate, below 5 % insufficient; the weakest category is where to focus next. The gain is
also shown with its paired bootstrap interval, so "effective" never hides "not proven".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.data.formats import read_json_file
from core.errors import DataError

EFFECTIVE, MODERATE = 0.10, 0.05


def load_results(path: str | Path) -> dict[str, Any]:
    results = read_json_file(path)
    missing = [key for key in ("metadata", "statistics", "by_category", "results") if key not in results]
    if missing:
        raise DataError(f"{path}: not an LLM bench result (no {missing[0]!r} section)")
    return results


def _relative_gain(base: float, adapter: float) -> float:
    return (adapter - base) / base if base > 0 else (1.0 if adapter > 0 else 0.0)


def text_report(results: dict[str, Any]) -> str:
    meta, stats = results["metadata"], results["statistics"]
    adapters = list(meta["adapters"])
    metrics = list(stats["base"]["averages"])
    lines = [f"LLM bench: {meta['base_model']} vs {', '.join(adapters)} on {meta['suite']} "
             f"({meta['prompts']} prompts, {meta['device']}, {meta['timestamp']})", ""]
    lines.append("Global averages (base → adapter, Δ [95% CI], verdict):")
    for adapter in adapters:
        for metric in metrics:
            d = stats[adapter]["vs_base"][metric]
            lines.append(f"  {adapter:<12} {metric:<18} {d['mean_a']:.3f} → {d['mean_b']:.3f}  "
                         f"{d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {d['verdict']} "
                         f"(wins/ties/losses {d['wins']}/{d['ties']}/{d['losses']}, "
                         f"sign test p={d['sign_p_value']:.3f})")
        lines.append(f"  {adapter:<12} latency            {stats['base']['mean_seconds']:.2f} s → "
                     f"{stats[adapter]['mean_seconds']:.2f} s; tokens/s {stats['base']['mean_tokens_per_s']:.1f} → "
                     f"{stats[adapter]['mean_tokens_per_s']:.1f}; timed out {stats[adapter]['timed_out']}")
    lines += ["", "Per category (domain relevance, base → adapter):"]
    for category, category_stats in results["by_category"].items():
        cells = [f"{category_stats['base']['averages'].get('domain_relevance', 0):.3f}"]
        cells += [f"{category_stats[a]['averages'].get('domain_relevance', 0):.3f}" for a in adapters]
        lines.append(f"  {category:<22} " + " → ".join(cells))
    for adapter in adapters:
        gains, regressions = top_changes(results, adapter)
        lines += ["", f"Top 5 improvements ({adapter}):"]
        lines += [f"  {d:+.3f}  [{r['category']}] {r['prompt']!r} → {r[adapter]['response'][:80]!r}"
                  for d, r in gains] or ["  none"]
        lines += [f"Top 5 regressions ({adapter}):"]
        lines += [f"  {d:+.3f}  [{r['category']}] {r['prompt']!r} → {r[adapter]['response'][:80]!r}"
                  for d, r in regressions] or ["  none"]
        lines += ["", f"Recommendation ({adapter}): " + recommendation(results, adapter)]
    return "\n".join(lines) + "\n"


def top_changes(results: dict[str, Any], adapter: str, n: int = 5) -> tuple[list[tuple[float, dict[str, Any]]],
                                                                              list[tuple[float, dict[str, Any]]]]:
    """The ``n`` prompts the adapter gained most on (largest first) and lost most on (worst first), as
    (domain-relevance change, result row); prompts without a change are in neither list."""
    deltas = sorted(((r[adapter]["metrics"].get("domain_relevance", 0) - r["base"]["metrics"].get(
        "domain_relevance", 0), r) for r in results["results"]), key=lambda pair: pair[0])
    return [pair for pair in reversed(deltas[-n:]) if pair[0] > 0], [pair for pair in deltas[:n] if pair[0] < 0]


def category_rows(results: dict[str, Any], metric: str = "domain_relevance") -> list[dict[str, Any]]:
    """Per category: the base's score, and each adapter's with its 95 % interval (base + the paired Δ interval)
    — the rows a chart of bars with error bars draws."""
    rows = []
    for category, stats in results["by_category"].items():
        base = stats["base"]["averages"].get(metric, 0.0)
        rows.append({"category": category, "variant": "base", "value": base, "low": None, "high": None})
        for adapter in results["metadata"]["adapters"]:
            delta = stats[adapter].get("vs_base", {}).get(metric, {})
            rows.append({"category": category, "variant": adapter, "value": stats[adapter]["averages"].get(metric, 0.0),
                         "low": base + delta["ci_low"] if delta else None,
                         "high": base + delta["ci_high"] if delta else None})
    return rows


def recommendation(results: dict[str, Any], adapter: str) -> str:
    stats = results["statistics"]
    base = stats["base"]["averages"].get("domain_relevance", 0.0)
    tuned = stats[adapter]["averages"].get("domain_relevance", 0.0)
    gain = _relative_gain(base, tuned)
    level = "effective" if gain > EFFECTIVE else "moderate" if gain >= MODERATE else "insufficient"
    verdict = stats[adapter]["vs_base"].get("domain_relevance", {}).get("verdict", "not proven")
    weakest = min(results["by_category"].items(),
                  key=lambda item: item[1][adapter]["averages"].get("domain_relevance", 0.0))[0]
    if verdict == "better":
        sureness = "the gain is statistically proven"
    elif level == "insufficient":
        sureness = f"statistically {verdict}"
    else:  # a large average gain that the interval does not back is not yet a reason to ship
        sureness = (f"but {verdict}: the 95 % interval still includes no gain, so do not ship on this alone — "
                    "more prompts or a stronger adapter")
    return (f"{level} ({gain * 100:+.1f} % domain relevance; {sureness}); "
            f"focus the next training data on '{weakest}', the weakest category.")


def figure(results: dict[str, Any], path: str | Path) -> Path:
    """2×2: relevance by category, keywords found, score distributions, summary box."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    adapters = list(results["metadata"]["adapters"])
    adapter = adapters[0]
    categories = list(results["by_category"])
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    x = np.arange(len(categories))
    width = 0.8 / (len(adapters) + 1)
    for offset, variant in enumerate(["base", *adapters]):
        values = [results["by_category"][c][variant]["averages"].get("domain_relevance", 0) for c in categories]
        axes[0, 0].bar(x + offset * width, values, width, label=variant)
    axes[0, 0].set_xticks(x + width * len(adapters) / 2, categories, rotation=15)
    axes[0, 0].set_title("Domain relevance by category")
    axes[0, 0].legend()
    found = {v: [r[v]["metrics"].get("keyword_match", 0) * len(r["expected_keywords"]) for r in results["results"]]
             for v in ["base", *adapters]}
    axes[0, 1].bar(list(found), [sum(v) for v in found.values()], color=["#888", *["#2a7"] * len(adapters)])
    axes[0, 1].set_title("Expected keywords found (total)")
    for variant in ["base", *adapters]:
        axes[1, 0].hist([r[variant]["metrics"].get("domain_relevance", 0) for r in results["results"]], bins=10,
                        range=(0, 1), alpha=0.5, label=variant)
    axes[1, 0].set_title("Distribution of domain relevance per prompt")
    axes[1, 0].legend()
    axes[1, 1].axis("off")
    summary = [f"base: {results['metadata']['base_model']}", f"adapter: {adapter}", ""]
    for metric, d in results["statistics"][adapter]["vs_base"].items():
        summary.append(f"{metric}: {d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] {d['verdict']}")
    summary += ["", recommendation(results, adapter)]
    axes[1, 1].text(0, 1, "\n".join(summary), va="top", family="monospace", fontsize=8, wrap=True)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=300)
    plt.close(fig)
    return path
