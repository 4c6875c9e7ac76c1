"""LLM A/B bench on a tiny random Llama with a LoRA adapter trained in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import DataError, EmbtuneError
from core.llmbench.config import BenchConfig
from core.llmbench.metrics import domain_relevance, fold, keyword_match, routed_tool, tool_routing
from core.llmbench.run import find_adapters, load_model, run_bench
from core.llmbench.suite import Prompt, load_suite, load_tools
from tests.conftest import SUITE, TOOLS, bench_config


def test_metrics_fold_accents_and_parse_tool_calls() -> None:
    prompt = Prompt("p", "c", "ouvre chrome", ["Chrome", "ouvré"], "open_app")
    assert fold("Ouvré Fenêtre") == "ouvre fenetre"
    assert keyword_match("J'OUVRE chrome", prompt, TOOLS) == 1.0
    assert keyword_match("rien", prompt, TOOLS) == 0.0
    assert routed_tool("ok: volume_up(step=2)", TOOLS) == "volume_up"
    assert tool_routing("J'ouvre. open_app(name=chrome)", prompt, TOOLS) == 1.0
    assert domain_relevance("ouvre chrome volume", prompt, TOOLS) == 1.0  # 3 of 7 terms ≥ 30 %
    assert domain_relevance("ouvre", prompt, TOOLS) == pytest.approx(1 / (0.3 * 7))


def test_config_refuses_unknown_keys_and_wrong_types() -> None:
    with pytest.raises(EmbtuneError, match=r"unknown key 'generation\.temp' \(known: do_sample, max_new_tokens"):
        BenchConfig.from_dict({"generation": {"temp": 0.5}})
    with pytest.raises(EmbtuneError, match=r"generation\.max_new_tokens='many' is not allowed: Input should be a "
                                           "valid integer"):
        BenchConfig.from_dict({"generation": {"max_new_tokens": "many"}})
    with pytest.raises(EmbtuneError, match="unknown key 'outputs'"):
        BenchConfig.from_dict({"outputs": {}})
    assert BenchConfig.from_dict({"model": {"adapters": ["a", "b"]}}).model.adapters == ["a", "b"]
    with pytest.raises(EmbtuneError, match=r"generation\.do_sample=1 is not allowed"):  # strict: 1 is not a bool
        BenchConfig.from_dict({"generation": {"do_sample": 1}})


def test_prompt_without_keywords_is_refused(tmp_path: Path) -> None:
    broken = json.loads(json.dumps(SUITE))
    broken["categories"]["routing"][1]["expected_keywords"] = []
    (tmp_path / "s.json").write_text(json.dumps(broken), encoding="utf-8")
    with pytest.raises(DataError, match=r"routing/r2 \('le son plus fort'\) has no expected_keywords"):
        load_suite(str(tmp_path / "s.json"))


def test_auto_picks_the_newest_adapter(bench_files: dict[str, Path], adapter: Path) -> None:
    assert find_adapters("auto", str(bench_files["adapters"])) == [adapter]


def test_bench_report_has_every_section_and_intervals(bench_files: dict[str, Path], tiny_llama_dir: Path,
                                                      adapter: Path) -> None:
    seen = []
    results = run_bench(bench_config(bench_files, tiny_llama_dir), progress=seen.append)
    assert set(results) == {"metadata", "statistics", "by_category", "results"}
    assert results["metadata"]["adapters"] == {"second": str(adapter)}
    assert set(results["by_category"]) == {"commands", "routing"}
    assert len(results["results"]) == 4 and seen[-1]["done"] == 4
    record = results["results"][0]
    assert {"response", "seconds", "tokens_per_s", "timed_out", "metrics"} <= set(record["base"])
    assert "hidden_similarity_to_base" in record["second"] and "embedding_similarity_to_base" in record["second"]
    assert len(record["base"]["response"]) <= 500
    from core.llmbench.report import figure, text_report

    report = text_report(results)
    assert "Recommendation (second):" in report and "Top 5 regressions" in report
    png = figure(results, bench_files["suite"].with_name("report.png"))
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and round(image.info["dpi"][0]) == 300
    for stats in results["statistics"]["second"]["vs_base"].values():
        assert stats["ci_low"] - 1e-9 <= stats["delta"] <= stats["ci_high"] + 1e-9
        assert stats["wins"] + stats["ties"] + stats["losses"] == 4
    json.dumps(results)  # the whole document is plain JSON


def test_generation_past_its_time_limit_is_recorded(bench_files: dict[str, Path], tiny_llama_dir: Path,
                                                    adapter: Path) -> None:
    results = run_bench(bench_config(bench_files, tiny_llama_dir, generation={"timeout_s": 1e-6,
                                                                              "max_new_tokens": 64}))
    assert all(r["base"]["timed_out"] for r in results["results"])
    assert results["statistics"]["base"]["timed_out"] == 4


def test_adapter_of_another_base_is_refused(bench_files: dict[str, Path], tmp_path: Path, adapter: Path) -> None:
    from tests.conftest import build_tiny_llama

    other = build_tiny_llama(tmp_path / "other", seed=3)
    config = bench_config(bench_files, other, model={"adapters": [str(adapter)]})
    with pytest.raises(EmbtuneError, match=r"was trained on '.*', but the configured base is"):
        load_model(config, find_adapters(config.model.adapters, "."))


def test_adapter_folder_without_weights_is_refused(adapter: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    with pytest.raises(EmbtuneError, match="has no weights"):
        find_adapters([str(empty)], ".")


def test_four_bit_loads_on_a_gpu_and_falls_back_with_a_warning_elsewhere(bench_files: dict[str, Path],
                                                                        tiny_llama_dir: Path) -> None:
    import importlib.util

    # What this machine has decides the expectation (bitsandbytes' NF4, on CUDA or its CPU backend), not the code
    # under test; when it quantises, the layers really are 4-bit ones.
    can_quantize = importlib.util.find_spec("bitsandbytes") is not None
    loaded = load_model(bench_config(bench_files, tiny_llama_dir, model={"quantization": "4bit"}))
    if can_quantize:
        assert loaded.quantization == "4bit" and not any("full precision" in w for w in loaded.warnings)
        assert any(type(module).__name__ == "Linear4bit" for module in loaded.model.modules())
    else:
        assert loaded.quantization == "none" and any("full precision" in w for w in loaded.warnings)


def test_the_bundled_suite_routes_only_to_bundled_tools_and_covers_each_of_them() -> None:
    """The bundled French suite and its tool dictionary are edited by hand: a prompt naming a tool that is not
    in the dictionary, or a tool no prompt exercises, would skew the bench's routing figures."""
    tools = load_tools("default")
    suite = load_suite("default", tools=tools)  # refuses a prompt whose expected tool is unknown
    expected = {prompt.expected_tool for prompt in suite.prompts if prompt.expected_tool}
    assert expected <= set(tools)
    assert set(tools) - expected == set(), f"tools no prompt routes to: {sorted(set(tools) - expected)}"
    assert all(prompt.expected_keywords for prompt in suite.prompts)


def test_llm_check_setup_reports_config_suite_and_adapters(bench_files: dict[str, Path], tiny_llama_dir: Path,
                                                           adapter: Path, tmp_path: Path, run_cli) -> None:
    from tests.conftest import build_tiny_llama

    config = bench_config(bench_files, tiny_llama_dir).to_dict()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(config), encoding="utf-8")
    result = run_cli("llm", "check-setup", "--config", str(good))
    assert result.code == 0, result.out + result.err
    assert "✓ config:" in result.out and "✓ prompt suite: t: 4 prompts in 2 categories, 3 tools" in result.out
    assert f"✓ adapter {adapter}" in result.out and "torch" in result.out

    other = build_tiny_llama(tmp_path / "other", seed=4)
    config["model"]["base"] = str(other)
    wrong_base = tmp_path / "wrong-base.json"
    wrong_base.write_text(json.dumps(config), encoding="utf-8")
    result = run_cli("llm", "check-setup", "--config", str(wrong_base))
    assert result.code == 1 and f"✗ adapter {adapter}" in result.out and "configured base" in result.out

    config["generation"]["temperature"] = "hot"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(config), encoding="utf-8")
    result = run_cli("llm", "check-setup", "--config", str(broken))
    assert result.code == 1 and "✗ config: bench config: generation.temperature='hot' is not allowed" in result.out


def test_recommendation_does_not_call_an_unproven_gain_effective_without_saying_so() -> None:
    from core.llmbench.report import recommendation

    def results(verdict: str) -> dict:
        averages = {"base": {"domain_relevance": 0.20}, "a": {"domain_relevance": 0.30}}
        stats = {"base": {"averages": averages["base"]},
                 "a": {"averages": averages["a"], "vs_base": {"domain_relevance": {"verdict": verdict}}}}
        return {"statistics": stats, "by_category": {"x": stats, "y": {
            "base": {"averages": {"domain_relevance": 0.1}}, "a": {"averages": {"domain_relevance": 0.05}}}}}

    proven = recommendation(results("better"), "a")
    assert proven.startswith("effective (+50.0 % domain relevance; the gain is statistically proven)")
    unproven = recommendation(results("not proven"), "a")
    assert unproven.startswith("effective (+50.0 % domain relevance; but not proven") and "do not ship" in unproven
    assert "'y', the weakest category" in unproven
