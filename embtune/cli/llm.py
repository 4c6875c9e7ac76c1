"""The LLM bench: a causal LM against the same LM with LoRA adapters, on a domain prompt set."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="A/B benchmark a causal LM against the same LM with LoRA adapters.", no_args_is_help=True)


@app.command("bench")
def llm_bench_command(config_file: Annotated[Path, typer.Argument(help="BenchConfig JSON")]) -> None:
    """Answer the suite with the base and each adapter; write JSON, text report and 300-dpi figure."""
    from core.llmbench.config import BenchConfig
    from core.llmbench.report import figure, text_report
    from core.llmbench.run import run_bench
    from storage.workspace import atomic_write_json, atomic_write_text

    config = BenchConfig.from_file(config_file)
    # The bench's own lines (load time, GPU memory per device) follow the config's verbosity.
    logging.getLogger("core.llmbench").setLevel(config.logging.verbosity.upper())

    def show(step: dict[str, Any]) -> None:
        times = ", ".join(f"{k} {v:.1f}s" for k, v in step["seconds"].items())
        typer.echo(f"[{step['done']}/{step['total']}] {step['prompt']!r} ({times})", err=True)

    results = run_bench(config, progress=show)
    out = Path(config.output.dir)
    atomic_write_json(out / config.output.json_name, results)
    report = text_report(results)
    atomic_write_text(out / "report.txt", report)
    figure(results, out / "report.png")
    typer.echo(report)
    typer.echo(f"written: {out / config.output.json_name}, {out / 'report.txt'}, {out / 'report.png'}")


@app.command("analyze")
def llm_analyze_command(
    results_file: Annotated[Path, typer.Argument(help="results JSON from `embtune llm bench`")],
    figure_path: Annotated[Path | None, typer.Option("--figure", help="PNG path (default: beside the JSON)")] = None,
) -> None:
    """Text report (global, per category, top gains/regressions, recommendation) and a 2×2 300-dpi PNG."""
    from core.llmbench.report import figure, load_results, text_report

    results = load_results(results_file)
    typer.echo(text_report(results))
    typer.echo(f"figure: {figure(results, figure_path or results_file.with_suffix('.png'))}")


@app.command("train-lora")
def llm_train_lora_command(
    out: Annotated[Path, typer.Option("--out", help="folder for the adapter")],
    base: Annotated[str, typer.Option("--base", help="causal LM id/folder, or smollm2")] = "smollm2",
    data: Annotated[str, typer.Option("--data", help="prompt/response JSONL (default: the bundled French "
                                      "set)")] = "default",
    epochs: Annotated[float, typer.Option("--epochs")] = 3.0,
    learning_rate: Annotated[float, typer.Option("--lr")] = 2e-4,
    rank: Annotated[int, typer.Option("--r")] = 8,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
) -> None:
    """A small supervised LoRA fine-tune, to produce an adapter to compare."""
    from core.llmbench.suite import DEFAULT_TRAIN
    from core.llmbench.train_lora import train_lora

    result = train_lora(base, out, data=DEFAULT_TRAIN if data == "default" else data, epochs=epochs,
                        learning_rate=learning_rate, r=rank, alpha=2 * rank, overwrite=overwrite)
    typer.echo(f"adapter: {result.output_dir} ({result.examples} examples, {result.steps} steps, "
               f"{result.train_seconds:.0f} s, final loss {result.final_loss}, "
               f"{result.trainable_parameters} trainable parameters)")


@app.command("check-setup")
def llm_check_setup_command(
    config_file: Annotated[Path | None, typer.Option("--config", help="BenchConfig JSON to check")] = None,
) -> None:
    """Python, torch, CUDA and GPU memory, the LLM libraries, 4-bit, SmolLM2, config, suite and adapters."""
    from core.llmbench.preflight import run_llm_checks
    from core.setup_check import FAIL

    checks = run_llm_checks(config_file)
    for check in checks:
        typer.echo(check.line())
    if any(check.status == FAIL for check in checks):
        raise typer.Exit(1)


@app.command("quick-test")
def llm_quick_test_command(
    model: Annotated[str, typer.Option("--model")] = "smollm2",
    prompt: Annotated[str, typer.Option("--prompt")] = "ouvre chrome",
) -> None:
    """Load the model and answer one prompt, with timing."""
    from core.llmbench.config import BenchConfig
    from core.llmbench.run import generate, load_model
    from core.llmbench.suite import Prompt, load_suite

    started = time.perf_counter()
    config = BenchConfig.from_dict({"model": {"base": model}, "generation": {"do_sample": False}})
    loaded = load_model(config)
    typer.echo(f"loaded {model} on {loaded.device} in {time.perf_counter() - started:.1f} s")
    answer = generate(loaded, load_suite("default"), Prompt("quick", "quick", prompt, [prompt]), config)
    typer.echo(f"{prompt!r} → {answer.text!r}\n{answer.new_tokens} tokens in {answer.seconds:.2f} s "
               f"({answer.tokens_per_s:.1f} tokens/s)")
