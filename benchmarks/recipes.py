"""Default recipes, measured: candidate losses/epochs/learning rates per data format, through the gate.

Each candidate is one ``embtune train`` process (the command a user runs, flags only) on the bundled
catalogue (scored pairs; its own held-out test split) or MedQuAD's training file (pairs; scored on
the dev set, read in place from ../shared/data/medquad). The run's gate gives, per candidate: the
primary metric (graded NDCG@10 at the smallest trained dimension) before → after with its paired
interval, the verdict at every dimension, the forgetting check on the bundled general set with its
interval, the gate's decision, and the training time. The recipe in ``core/training/recipes.py``
is the candidate that is *better* at every dimension and passes the forgetting threshold.

    python benchmarks/recipes.py --out /tmp/recipes                      # the catalogue candidates
    python benchmarks/recipes.py --candidates medquad-mnrl,medquad-cached-s50 --out /tmp/recipes
    python benchmarks/recipes.py --out /tmp/recipes --evaluate-only      # re-read; forgetting re-measured
    python benchmarks/recipes.py --model minilm --max-steps 4 --out /tmp/r  # smoke run

Triplets are trained by the same in-batch loss as pairs (MNRL reads a third column as a hard
negative): the catalogue with ``--hard-negatives 3`` stands for them. Classes stand as the
catalogue's products labelled by their category (text, label; written into ``--out``); they hold no
queries, so those runs are gated on every labelled catalogue query (``--test-data bundled:catalogue``,
none of which they train on) and on the forgetting set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import cpu_report, cpu_snapshot, machine_line

MEDQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "medquad"
CATALOGUE = ["--data", "bundled:catalogue"]
CLASSES_FILE = "catalogue_classes.csv"
CLASSES = ["--data", CLASSES_FILE, "--test-data", "bundled:catalogue"]
OLD_DEFAULT = ["--loss", "cosent", "--epochs", "1", "--lr", "2e-5", "--batch-size", "16", "--matryoshka-dims", "none",
               "--augment-typos", "0"]
MNRL = ["--loss", "mnrl", "--batch-size", "32", "--matryoshka-dims", "384,256,128,64"]
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    # name: (format, flags)
    "catalogue-recipe (no flags: the studio's defaults)": ("scored", [*CATALOGUE]),
    "catalogue-recipe-7e-5 (the studio's defaults at lr 7e-5)": ("scored", [*CATALOGUE, "--lr", "7e-5"]),
    "catalogue-cosent-1ep (old studio default)": ("scored", [*CATALOGUE, *OLD_DEFAULT]),
    "catalogue-recipe-lr1e-2 (a deliberately bad learning rate: the gate must reject it)": (
        "scored", [*CATALOGUE, "--lr", "1e-2"]),
    "catalogue-mnrl-1ep-5e-5": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "5e-5", "--augment-typos", "1"]),
    "catalogue-mnrl-2ep-5e-5": ("scored", [*CATALOGUE, *MNRL, "--epochs", "2", "--lr", "5e-5", "--augment-typos", "1"]),
    "catalogue-mnrl-2ep-5e-5-s50": ("scored", [*CATALOGUE, *MNRL, "--epochs", "2", "--lr", "5e-5",
                                               "--augment-typos", "1", "--loss-scale", "50"]),
    "catalogue-mnrl-1ep-5e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "5e-5",
                                                "--augment-typos", "1", "--loss-scale", "100"]),
    "catalogue-mnrl-1ep-2e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "2e-5",
                                                "--augment-typos", "1", "--loss-scale", "100"]),
    "catalogue-lora-r16-1ep-2e-4-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "2e-4", "--lora",
                                                    "--lora-r", "16", "--lora-alpha", "32", "--augment-typos", "1",
                                                    "--loss-scale", "100"]),
    "catalogue-anchor100-1ep-5e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "5e-5",
                                                     "--augment-typos", "1", "--loss-scale", "100",
                                                     "--similarity-anchor", "100"]),
    "catalogue-anchor1000-1ep-5e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "5e-5",
                                                      "--augment-typos", "1", "--loss-scale", "100",
                                                      "--similarity-anchor", "1000"]),
    "catalogue-anchor300-1ep-2e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "2e-5",
                                                     "--augment-typos", "1", "--loss-scale", "100",
                                                     "--similarity-anchor", "300"]),
    "catalogue-anchor1000-1ep-3e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "3e-5",
                                                      "--augment-typos", "1", "--loss-scale", "100",
                                                      "--similarity-anchor", "1000"]),
    "catalogue-anchor1000-1ep-5e-5-s100-notypos": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "5e-5",
                                                              "--augment-typos", "0", "--loss-scale", "100",
                                                              "--similarity-anchor", "1000"]),
    "catalogue-anchor300-1ep-3e-5-s100": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "3e-5",
                                                     "--augment-typos", "1", "--loss-scale", "100",
                                                     "--similarity-anchor", "300"]),
    "catalogue-anchor300-1ep-2e-5-s100-w64": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "2e-5",
                                                         "--augment-typos", "1", "--loss-scale", "100",
                                                         "--similarity-anchor", "300",
                                                         "--matryoshka-weights", "1,1,1,3"]),
    "catalogue-anchor1000-1ep-5e-5-s100-notypos-w64": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "5e-5",
                                                                  "--augment-typos", "0", "--loss-scale", "100",
                                                                  "--similarity-anchor", "1000",
                                                                  "--matryoshka-weights", "1,1,1,3"]),
    "catalogue-anchor1000-1ep-7e-5-s100-notypos": ("scored", [*CATALOGUE, *MNRL, "--epochs", "1", "--lr", "7e-5",
                                                              "--augment-typos", "0", "--loss-scale", "100",
                                                              "--similarity-anchor", "1000"]),
    # session 10: heavier anchors at lr 7e-5 (they end exactly where anchor 1000 did: the weight saturates)
    **{f"catalogue-anchor{weight}-1ep-7e-5-s100-notypos": ("scored", [
        *CATALOGUE, *MNRL, "--epochs", "1", "--lr", "7e-5", "--augment-typos", "0", "--loss-scale", "100",
        "--similarity-anchor", str(weight)]) for weight in (3000, 10000)},
    "catalogue-mnrl-4ep-1e-4 (README)": ("scored", [*CATALOGUE, *MNRL, "--epochs", "4", "--lr", "1e-4",
                                                    "--augment-typos", "1"]),
    "catalogue-mnrl-2ep-5e-5-negatives": ("triplets", [*CATALOGUE, *MNRL, "--epochs", "2", "--lr", "5e-5",
                                                       "--hard-negatives", "3"]),
    "catalogue-recipe-negatives (the recipe + 3 mined hard negatives per pair)": (
        "triplets", [*CATALOGUE, "--hard-negatives", "3"]),
    # classes: the catalogue's products by category (CLASSES_FILE is written into --out)
    "classes-recipe (no flags but the test data)": ("classes", [*CLASSES]),
    **{f"classes-{loss.replace('_', '-')}-{epochs}ep-{lr}": ("classes", [*CLASSES, "--loss", loss, "--epochs",
                                                                          epochs, "--lr", lr])
       for loss in ("batch_all_triplet", "batch_hard_triplet", "batch_semi_hard_triplet",
                    "batch_hard_soft_margin_triplet") for epochs, lr in (("1", "2e-5"), ("3", "5e-5"))},
    "medquad-mnrl": ("pairs", ["--data", str(MEDQUAD / "train_pairs.csv"), *MNRL, "--epochs", "1", "--lr", "4e-5",
                               "--test-data", str(MEDQUAD), "--test-fraction", "0", "--group-by", "focus"]),
    "medquad-cached-s50": ("pairs", ["--data", str(MEDQUAD / "train_pairs.csv"), "--loss", "cached_mnrl",
                                     "--batch-size", "128", "--matryoshka-dims", "384,256,128,64", "--epochs", "1",
                                     "--lr", "4e-5", "--loss-scale", "50", "--test-data", str(MEDQUAD),
                                     "--test-fraction", "0", "--group-by", "focus"]),
}
DEFAULT_SET = [name for name in CANDIDATES if name.startswith("catalogue-") and "negatives" not in name]


def write_classes_file(out: Path) -> Path:
    """The catalogue's products as classes data: the indexed text (the name) labelled by its category."""
    from core.data.bundled import CATALOGUE_PRODUCTS
    from core.data.formats import read_table

    frame = read_table(CATALOGUE_PRODUCTS)
    path = out / CLASSES_FILE
    frame.rename(columns={"name": "text", "category": "label"})[["text", "label"]].to_csv(path, index=False)
    return path


def slug(name: str) -> str:
    return name.split(" ")[0]


def train_candidate(name: str, args: argparse.Namespace) -> dict:
    data_format, flags = CANDIDATES[name]
    flags = [str(write_classes_file(args.out)) if flag == CLASSES_FILE else flag for flag in flags]
    folder = args.out / slug(name)
    record_file = folder / "embtune_run.json"
    if not (args.evaluate_only and record_file.is_file()):
        command = [sys.executable, "-m", "embtune", "train", *flags, "--model", args.model, "--output-dir",
                   str(folder), "--run-name", slug(name), "--overwrite", "--device", "cpu",
                   *(["--max-steps", str(args.max_steps)] if args.max_steps else [])]
        env = {**os.environ, "EMBTUNE_HOME": str(args.out / "workspace"), "HF_HUB_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}
        started = time.perf_counter()
        with open(args.out / f"{slug(name)}.log", "w", encoding="utf-8") as log:
            done = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode not in (0, 3) or not record_file.is_file():
            return {"name": name, "format": data_format, "error": f"exit {done.returncode}, see "
                    f"{args.out / (slug(name) + '.log')}", "wall_s": time.perf_counter() - started}
    record = json.loads(record_file.read_text(encoding="utf-8"))
    result, gate = record["result"], record["result"].get("gate") or {}
    if args.evaluate_only:
        result["forgetting"] = forgetting_now(args.model, folder)
    ndcg = [c for c in result["before_after"] if c["metric"] == "ndcg@10"]
    return {
        "name": name, "format": data_format, "status": result["status"], "verdict": gate.get("verdict"),
        "primary": gate.get("metric"), "before": gate.get("before"), "after": gate.get("after"),
        "ci": [gate.get("ci_low"), gate.get("ci_high")],
        "per_dimension": {int(c["dimension"]): (c["mean_a"], c["mean_b"], c["verdict"]) for c in ndcg},
        "forgetting": result.get("forgetting") or {}, "train_s": result["train_seconds"],
        "reason": gate.get("reason"),
    }


def forgetting_now(base_spec: str, folder: Path) -> dict:
    """The forgetting check again, on the general set as it is now (it may have changed since the run)."""
    from core.embedders import load_embedder
    from core.evaluation import compare_results, evaluate_retrieval, load_retrieval_set

    general = load_retrieval_set("bundled:general")
    before = evaluate_retrieval(load_embedder(base_spec, device="cpu", fallback=False), general)
    after = evaluate_retrieval(load_embedder(str(folder), device="cpu", fallback=False), general)
    [c] = [c for c in compare_results(before, after, metrics=("ndcg@10",)) if c.dimension == max(before.dimensions)]
    return {"data": f"{general.name} ({len(general.queries)} queries)", "ndcg@10_before": c.mean_a,
            "ndcg@10_after": c.mean_b, "delta": c.delta, "ci_low": c.ci_low, "ci_high": c.ci_high}


def table(rows: list[dict]) -> str:
    lines = ["| candidate | format | NDCG@10 per dimension (before → after, verdict) | forgetting (points, 95% CI) "
             "| gate | train |", "|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | {row['format']} | {row['error']} | | | |")
            continue
        dims = "; ".join(f"{d}: {a:.3f} → {b:.3f} {v}" for d, (a, b, v) in sorted(row["per_dimension"].items(),
                                                                                  reverse=True))
        f = row["forgetting"]
        forgetting = (f"{f['delta'] * 100:+.2f} [{f['ci_low'] * 100:+.2f}, {f['ci_high'] * 100:+.2f}] on {f['data']}"
                      if "ci_low" in f else "–")
        lines.append(f"| {row['name']} | {row['format']} | {dims} | {forgetting} | **{row['status']}** | "
                     f"{row['train_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/embtune-recipes"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--candidates", default=",".join(slug(n) for n in DEFAULT_SET),
                        help=f"comma separated, from: {', '.join(slug(n) for n in CANDIDATES)}")
    parser.add_argument("--max-steps", type=int, default=0, help="stop each run after N steps (smoke run)")
    parser.add_argument("--evaluate-only", action="store_true", help="read the runs already in --out")
    args = parser.parse_args(argv)
    by_slug = {slug(name): name for name in CANDIDATES}
    unknown = [c for c in args.candidates.split(",") if c not in by_slug]
    if unknown:
        parser.error(f"unknown candidate {unknown[0]!r}: choose from {', '.join(by_slug)}")
    args.out.mkdir(parents=True, exist_ok=True)
    print(machine_line())
    snapshot = cpu_snapshot()
    rows = []
    for candidate in args.candidates.split(","):
        rows.append(train_candidate(by_slug[candidate], args))
        print(f"{candidate}: {rows[-1].get('status', rows[-1].get('error'))}", flush=True)
    print(f"\nmodel {args.model}\n")
    print(table(rows))
    print("\n" + cpu_report(snapshot))
    (args.out / "recipes.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    (args.out / "recipes.md").write_text(table(rows) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
