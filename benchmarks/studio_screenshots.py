"""Screenshots of every studio page on the bundled catalogue with the bundled model (docs/images/studio-*.png).

What the README shows: the studio as `make demo` starts it (the catalogue indexed with the bundled
MiniLM, its queries queued for labelling, its UMAP map), plus a fine-tuned catalogue run so the
Train, Compare and Map pages have something to compare. Run it on purpose (not part of
`make test`; the CI browser flow in tests/test_studio_browser.py uses a tiny model)::

    nice -n 19 .venv/bin/python benchmarks/studio_screenshots.py [--run-model PATH] [--out docs/images]

The fine-tuned run: ``--run-model PATH`` (a folder written by ``embtune train`` on
``bundled:catalogue``; its embtune_run.json gives the config and before/after table), else
/tmp/cat/weighted or /tmp/cat/hn-clean (from ``benchmarks/catalogue_finetune.py --out /tmp/cat``),
else a 1-epoch run is trained here first (a few minutes on 2 cores). The Compare page's evaluation
is default vs that run on the run's own held-out test split, rebuilt from its config.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import CHROMIUM, free_port, open_browser

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RUN_CANDIDATES = ("/tmp/cat/weighted", "/tmp/cat/hn-clean")
RUN_NAME = "catalogue-tuned"
QUERY = "шуруповерт акамуляторный"  # misspelt Russian: the default model ranks the right product first
TIMEOUT_MS = 300_000


def tuned_model(explicit: str | None, workspace: Path) -> Path:
    for candidate in ([explicit] if explicit else list(RUN_CANDIDATES)):
        if candidate and (Path(candidate) / "modules.json").is_file():
            return Path(candidate)
    if explicit:
        sys.exit(f"--run-model {explicit}: not a sentence-transformers folder")
    from core.training.config import TrainingConfig
    from core.training.train import train

    out = workspace / "models" / RUN_NAME
    print(f"no fine-tuned catalogue model found: training one epoch into {out} (a few minutes)")
    train(TrainingConfig(data="bundled:catalogue", output_dir=str(out), epochs=1, matryoshka_dims=[384, 256, 128, 64],
                         forgetting_check=True), show_progress=True)
    return out


def prepare(workspace: Path, run_model: Path) -> None:
    """The demo state (as `make demo` builds it), the fine-tuned run registered, and one evaluation."""
    from core.data.split import split_by_group
    from core.data.training_data import group_column_for, load_training_data, retrieval_set_for
    from core.evaluation import run_evaluation, save_report
    from storage.db import Database
    from storage.runs import RunStore
    from storage.workspace import Workspace
    from webapp.first_start import prepare_bundled_catalogue

    ws = Workspace.open(workspace)
    db = Database(ws.default_db_url)
    prepare_bundled_catalogue(ws, db)
    saved = json.loads((run_model / "embtune_run.json").read_text(encoding="utf-8"))
    config, result = saved["config"], saved["result"]
    runs = RunStore(db)
    if runs.get(RUN_NAME) is None:
        runs.start(RUN_NAME, collection_name="catalogue", config=config, model_path=str(run_model))
        history = [{"step": m["step"], "epoch": m["epoch"], "loss": m["train_loss"]} for m in result["epoch_metrics"]
                   if "train_loss" in m]
        runs.update(RUN_NAME, status="done", epoch_metrics=result["epoch_metrics"],
                    progress={"step": result["global_steps"], "total_steps": result["global_steps"],
                              "epoch": config["epochs"], "history": history},
                    before_after={"comparisons": result["before_after"], "table": result["table"],
                                  "forgetting": result["forgetting"], "warnings": result["warnings"]})
    if not list(ws.reports_dir.glob("eval-*.json")):
        data = load_training_data(config["data"], db=db)
        splits = split_by_group(data.frame, group_column_for(data.frame, config["group_by"]),
                                validation=config["validation_fraction"], test=config["test_fraction"],
                                seed=config["seed"], source=config["data"])
        folder = retrieval_set_for(splits.test, data.corpus, "catalogue test split").write_folder(
            Path(tempfile.mkdtemp()) / "test")
        report = run_evaluation(folder, ["default", f"run:{RUN_NAME}"], dimensions=config["matryoshka_dims"] or None,
                                db=db, regressions_limit=5)
        save_report(report, ws.reports_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-model")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--workspace", default=str(Path(tempfile.gettempdir()) / "embtune-studio-screens"))
    args = parser.parse_args()
    if not Path(CHROMIUM).is_file():  # before minutes of preparation, not after
        sys.exit(f"{CHROMIUM} is missing: `apt-get install -y chromium` (or `make screenshots`)")
    workspace, out = Path(args.workspace), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prepare(workspace, tuned_model(args.run_model, workspace))

    port = free_port()
    env = {**os.environ, "EMBTUNE_HOME": str(workspace)}
    env.pop("EMBTUNE_DB", None)
    studio = subprocess.Popen([sys.executable, "-m", "embtune", "studio", "--workspace", str(workspace), "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(url + "_stcore/health", timeout=2).close()
                break
            except OSError:
                time.sleep(0.5)
        shoot(url, out)
    finally:
        studio.terminate()
        studio.wait(timeout=30)


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1500})
        page.set_default_timeout(TIMEOUT_MS)

        def save(name: str) -> None:
            page.wait_for_timeout(1500)  # charts finish drawing
            page.screenshot(path=str(out / f"studio-{name}.png"))
            print(f"written: {out / f'studio-{name}.png'}")

        page.goto(url)
        page.get_by_text("Collections").first.wait_for()
        query = page.get_by_label("Query", exact=True)
        query.fill(QUERY)
        query.press("Enter")
        page.get_by_text("Show as").wait_for()
        page.get_by_text("Cards").click()
        page.get_by_text("score 0.").first.wait_for()
        save("data")

        page.get_by_role("link", name="Label").click()
        annotator = page.get_by_label("Annotator", exact=True)
        annotator.fill("analyst")
        annotator.press("Enter")
        page.get_by_text("rank 1 · top-k").wait_for()
        save("label")

        page.get_by_role("link", name="Train").click()
        page.get_by_text("Runs").first.wait_for()
        page.get_by_text("Before → after on the held-out test split").wait_for()
        save("train")

        page.get_by_role("link", name="Compare").click()
        page.get_by_text("NDCG@10 against dimension").first.wait_for(state="attached")
        save("compare")

        page.get_by_role("link", name="Map").click()
        page.get_by_label("Side by side with").click()
        page.get_by_role("option", name=f"run:{RUN_NAME}").click()
        page.get_by_label("Colour by").click()
        page.get_by_role("option", name="category").click()
        place = page.get_by_label("Place a query")
        place.fill(QUERY)
        place.press("Enter")
        page.get_by_text("Nearest neighbours of the query").nth(1).wait_for()
        save("map")
        browser.close()


if __name__ == "__main__":
    main()
