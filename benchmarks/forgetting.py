"""The forgetting check on its own: base vs fine-tuned models on the bundled general set, paired, per kind.

    python benchmarks/forgetting.py /tmp/cat-e5/full                    # against the default model
    python benchmarks/forgetting.py --base minilm models/run-a models/run-b

Prints NDCG@10 before → after with the paired 95 % interval over all queries (what the gate reads),
then per query kind (product, general, french, russian).
"""

from __future__ import annotations

import argparse

from _common import cpu_report, cpu_snapshot, machine_line

from core.embedders import load_embedder
from core.evaluation import compare_results, evaluate_retrieval, load_retrieval_set


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="fine-tuned model folders (or specs)")
    parser.add_argument("--base", default="default")
    parser.add_argument("--data", default="bundled:general")
    args = parser.parse_args(argv)
    print(machine_line())
    snapshot = cpu_snapshot()
    general = load_retrieval_set(args.data)
    base = evaluate_retrieval(load_embedder(args.base, device="cpu", fallback=False), general)
    full = max(base.dimensions)
    print(f"{general.name}: {len(general.queries)} queries, {len(general.corpus)} items; base {args.base}")
    for spec in args.models:
        tuned = evaluate_retrieval(load_embedder(spec, device="cpu", fallback=False), general)
        [c] = [c for c in compare_results(base, tuned, metrics=("ndcg@10",)) if c.dimension == full]
        print(f"{spec}: NDCG@10 {c.mean_a:.4f} → {c.mean_b:.4f}, Δ {c.delta * 100:+.2f} points "
              f"[{c.ci_low * 100:+.2f}, {c.ci_high * 100:+.2f}] {c.verdict}")
        after = tuned.by_kind("ndcg@10", full)
        for kind, before in base.by_kind("ndcg@10", full).items():
            now = after.get(kind, 0.0)
            print(f"  {kind:<10} {before:.4f} → {now:.4f} ({(now - before) * 100:+.2f})")
    print(cpu_report(snapshot))


if __name__ == "__main__":
    main()
