"""Where an OpenVINO export spends its time: fp32 vs int8 graph, per node type and per oneDNN kernel.

Explains the int8 row of ``backends.py``: on a CPU without VNNI/AMX the int8 FullyConnected nodes run
oneDNN's ``jit_gemm_I8`` (each int8 product widened by separate instructions) and lose to the fp32
kernels. Run it in the OpenVINO environment on a model folder that ``embtune export --format openvino
[--quantize int8]`` has written into:

    .venv-openvino/bin/python benchmarks/openvino_profile.py MODEL_FOLDER [--batch 16 --tokens 64 --threads 1]

Prints ms per batch for each graph found (``openvino/openvino_model.xml`` and its int8 sibling), the
node types and kernels that take the most time, and the int8 / fp32 ratio of the whole batch.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np
from _common import cpu_report, cpu_snapshot, machine_line

GRAPHS = {"fp32": "openvino_model.xml", "int8": "openvino_model_qint8_quantized.xml"}
TEXT = "query: how to treat a chimney pipe 115 мм"


def profile(xml: Path, inputs: dict[str, np.ndarray], threads: int, rounds: int) -> tuple[float, dict, dict]:
    """Mean ms per batch, and mean ms per node type and per (node type, kernel), from PERF_COUNT."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(xml))
    names = [port.get_any_name() for port in model.inputs]
    feed = {name: inputs.get(name, np.zeros_like(inputs["input_ids"])) for name in names}
    request = core.compile_model(model, "CPU", {"PERF_COUNT": "YES", "INFERENCE_NUM_THREADS": str(threads)}
                                 ).create_infer_request()
    for _ in range(3):
        request.infer(feed)
    by_type: collections.Counter[str] = collections.Counter()
    by_kernel: collections.Counter[tuple[str, str]] = collections.Counter()
    started = time.perf_counter()
    for _ in range(rounds):
        request.infer(feed)
        for node in request.profiling_info:
            ms = node.real_time.total_seconds() * 1e3 / rounds
            by_type[node.node_type] += ms
            by_kernel[(node.node_type, node.exec_type)] += ms
    return (time.perf_counter() - started) * 1e3 / rounds, dict(by_type), dict(by_kernel)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model folder holding openvino/openvino_model*.xml")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    folder = args.model / "openvino" if (args.model / "openvino").is_dir() else args.model
    graphs = {label: folder / name for label, name in GRAPHS.items() if (folder / name).is_file()}
    if not graphs:
        raise SystemExit(f"error: {folder}: no {' or '.join(GRAPHS.values())} (run embtune export first)")
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    inputs = dict(tokenizer([TEXT] * args.batch, padding="max_length", max_length=args.tokens, truncation=True,
                            return_tensors="np"))
    print(machine_line())
    snapshot = cpu_snapshot()
    totals = {}
    for label, xml in graphs.items():
        totals[label], by_type, by_kernel = profile(xml, inputs, args.threads, args.rounds)
        print(f"\n{label} ({xml.name}): {totals[label]:.1f} ms a batch of {args.batch} × {args.tokens} tokens, "
              f"{args.threads} thread(s)")
        for node_type, ms in sorted(by_type.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {node_type:<28} {ms:9.2f} ms")
        for (node_type, kernel), ms in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {node_type + ' / ' + kernel:<48} {ms:9.2f} ms")
    if len(totals) == 2:
        print(f"\nint8 / fp32: {totals['int8'] / totals['fp32']:.2f}× the time of a batch")
    print("\n" + cpu_report(snapshot))


if __name__ == "__main__":
    main()
