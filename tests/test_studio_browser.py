"""The studio in a real browser (Debian's chromium driven by playwright), the way a newcomer uses it:
import a CSV, label three pairs, find out why they cannot train, launch and cancel a run on the bundled
data, launch one to the end, compare it with its base, open the map. A screenshot of each step is kept
(``STUDIO_SCREENSHOTS=DIR`` keeps them there).

It never skips: a missing browser or driver is a failure that says how to install it (``make test``
installs both on a fresh machine).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from storage.db import Database
from storage.runs import RunStore
from storage.workspace import Workspace
from tests.conftest import COMPLETED, free_port, seed_training_speed

CHROMIUM = "/usr/bin/chromium"
STEP_TIMEOUT_MS = 120_000



@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``embtune studio`` in a subprocess on a free loopback port; stopped in teardown."""
    workspace = tmp_path / "ws"
    seed_training_speed(Workspace.open(workspace))  # the page opens on the default model: no probe of it here
    port = free_port()
    log = open(tmp_path / "studio.log", "wb")  # noqa: SIM115 - closed in teardown
    env = {**os.environ, "EMBTUNE_HOME": str(workspace)}
    env.pop("EMBTUNE_DB", None)
    process = subprocess.Popen([sys.executable, "-m", "embtune", "studio", "--workspace", str(workspace), "--port",
                                str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the studio did not start:\n" + (tmp_path / "studio.log").read_text()[-3000:])
        time.sleep(0.5)
    try:
        yield url, workspace
    finally:
        _stop_training_processes(workspace)  # they live in sessions of their own and would outlive the studio
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _stop_training_processes(workspace: Path) -> None:
    import signal

    from core.training.runs import process_alive

    db_file = workspace / "embtune.db"
    if not db_file.is_file():
        return
    runs = RunStore(Database(f"sqlite:///{db_file}"))
    for run in runs.list():
        process = runs.process(run.name)
        if process is not None and process.pid and process_alive(process.pid, process.process_started):
            os.kill(process.pid, signal.SIGKILL)


def wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def metric_value(page, label: str) -> str:
    """The value shown by the ``st.metric`` labelled ``label``."""
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue").inner_text()


def test_a_newcomers_path_in_a_real_browser(studio, tmp_path: Path, tiny_model_dir: Path) -> None:
    """Import → label (counters move with each click) → Train says why three labels cannot train and opens on the
    bundled data → Launch shows the new run with a rising duration → Cancel says "cancelling…" then "cancelled at
    step N" → a finished run's default Compare reproduces the gate's figures → an evaluation on queries the run
    trained on warns → Map. Every request the pages make stays on this machine."""
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it)"
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=STEP_TIMEOUT_MS)  # a busy machine reruns a page slowly; no step is timed

    url, workspace = studio
    shots = Path(os.environ.get("STUDIO_SCREENSHOTS") or tmp_path / "screens")
    shots.mkdir(parents=True, exist_ok=True)
    items = tmp_path / "items.csv"
    items.write_text("id,name,category\n" + "".join(
        f"P{i},{text},{text.split()[0]}\n" for i, text in enumerate(
            ["chimney pipe steel", "chimney pipe", "chimney cap", "garden hose", "cordless drill", "drill bits",
             "paint white", "paint black", "hose reel", "pipe wrench"])), encoding="utf-8")
    db = Database(f"sqlite:///{workspace / 'embtune.db'}")
    requests: list[str] = []

    with sync_playwright() as playwright:
        # playwright's launch() gives the browser a fresh temporary profile of its own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1400, "height": 2200})  # tall: Streamlit scrolls inside
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.on("request", lambda request: requests.append(request.url))
        try:
            # 1. Data: upload, check, confirm.
            page.goto(url)
            page.get_by_text("No collections yet").first.wait_for()
            page.locator("input[type=file]").first.set_input_files(str(items))
            page.get_by_text("10 rows, columns").wait_for()
            model_box = page.get_by_label("Model", exact=True)
            model_box.fill(str(tiny_model_dir))
            model_box.press("Enter")
            page.get_by_role("button", name="Import 10 rows into 'items'").click()
            page.get_by_text("indexed 10 items into 'items'").wait_for()
            page.screenshot(path=str(shots / "1-data-import.png"), full_page=True)
            assert db.get_collection("items").item_count == 10

            # 2. Label: three pairs with the buttons; the counter counts each click, the chosen score is marked.
            page.get_by_role("link", name="Label").click()
            annotator = page.get_by_label("Annotator", exact=True)
            annotator.fill("browser-test")
            annotator.press("Enter")
            page.get_by_text("Type a query").click()
            query = page.get_by_label("Query", exact=True)
            query.fill("chimney")
            query.press("Enter")
            for count in (1, 2, 3):
                page.get_by_text("rank 1 · top-k").wait_for()
                page.get_by_role("button", name="1", exact=True).nth(count - 1).click()
                wait_until(lambda n=count: len(db.labels("items")) == n, f"label {count} in the database")
                expect(page.get_by_test_id("stMetric").filter(has_text="Labelled pairs")
                       .get_by_test_id("stMetricValue")).to_have_text(str(count))
                chosen = page.get_by_test_id("stBaseButton-primary").filter(has_text=re.compile(r"^1$"))
                expect(page.get_by_test_id("stButton").filter(has=chosen)).to_have_count(count)  # highlighted
            page.screenshot(path=str(shots / "2-label.png"), full_page=True)
            page.reload()  # the annotator stays
            expect(page.get_by_label("Annotator", exact=True)).to_have_value("browser-test")
            labels = db.labels("items")
            assert [(label.query, label.score, label.annotator) for label in labels] == \
                [("chimney", 1.0, "browser-test")] * 3

            # 3. Train: the three labels cannot train; the page says why and opens on the bundled catalogue.
            page.get_by_role("link", name="Train").click()
            page.get_by_text("Opened on the bundled catalogue: the labels of 'items' cannot train yet — 3 labelled "
                             "pairs on 1 query; training needs at least 8 pairs on 6 queries", exact=False).wait_for()
            page.get_by_text("label 5 more pairs and 5 more queries", exact=False).first.wait_for()
            base_box = page.get_by_label("Base model")
            base_box.fill(str(tiny_model_dir))
            base_box.press("Enter")
            epochs = page.get_by_label("Epochs")
            epochs.fill("100")
            epochs.press("Enter")
            page.get_by_text("of training on this machine", exact=False).wait_for()  # steps and time before Launch
            page.get_by_role("button", name="Launch").click()
            page.get_by_text("launched run-").wait_for()
            [long_run] = RunStore(db).list()
            expect(page.get_by_role("combobox", name="Run")).to_have_value(long_run.name)  # the new run in view
            wait_until(lambda: RunStore(db).get(long_run.name).status == "running", "the run to start")
            first = metric_value(page, "Duration")
            wait_until(lambda: metric_value(page, "Duration") not in (first, "–"), "the duration to rise")
            page.screenshot(path=str(shots / "3-train-running.png"), full_page=True)

            page.get_by_role("button", name="Cancel this run").click()
            expect(page.get_by_test_id("stMetric").filter(has_text="Status").get_by_test_id("stMetricValue")
                   ).to_have_text("cancelling…")
            wait_until(lambda: RunStore(db).get(long_run.name).status == "cancelled", "the run to stop",
                       timeout=300)
            step = RunStore(db).get(long_run.name).progress["step"]
            page.get_by_test_id("stAlert").filter(has_text=f"cancelled at step {step}").wait_for()

            epochs.fill("0.2")  # a fifth of an epoch: 20 steps, then the gate's evaluation
            epochs.press("Enter")
            page.get_by_text("of training on this machine", exact=False).wait_for()
            page.get_by_role("button", name="Launch").click()
            page.get_by_text("launched run-").wait_for()
            wait_until(lambda: any(run.status in (*COMPLETED, "failed") for run in RunStore(db).list()),
                       "the training run to finish", timeout=600)
            run = next(run for run in RunStore(db).list() if run.status in (*COMPLETED, "failed"))
            assert run.status in COMPLETED, run.error  # the gate decided (a tiny random model: any verdict)
            page.get_by_test_id("stAlert").filter(has_text=f"{run.status}: ").first.wait_for()  # the gate's verdict
            page.screenshot(path=str(shots / "3-train.png"), full_page=True)

            # 4. Compare: by default the run against its own base on its own test split: the gate's figures.
            page.get_by_role("link", name="Compare").click()
            page.get_by_role("button", name="Evaluate").click()
            page.get_by_text("saved eval-").wait_for()
            gate = RunStore(db).get(run.name).before_after["gate"]
            page.get_by_text(f"{gate['metric']} on run {run.name}'s test split: {gate['before']:.4f} → "
                             f"{gate['after']:.4f} here · the gate measured {gate['before']:.4f} → "
                             f"{gate['after']:.4f}", exact=False).wait_for()
            page.get_by_text("A run against its base").first.wait_for()

            page.get_by_text("Models on a data set").click()
            more = page.get_by_label("More models (comma-separated specs or folders)")
            more.fill(f"run:{run.name}")
            more.press("Enter")
            seen = {text for split in ("train", "validation") for text in run.splits[split]["texts"]}
            page.get_by_text(f"{len(seen)} of these queries are ones run:{run.name} trained on",
                             exact=False).wait_for()
            page.screenshot(path=str(shots / "4-compare.png"), full_page=True)

            # 5. Map: the chart is drawn.
            page.get_by_role("link", name="Map").click()
            page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
            page.get_by_text("projected in", exact=False).or_(page.get_by_text("from cache in")).first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "5-map.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "failed-here.png"), full_page=True)
            raise
        finally:
            browser.close()
    outside = sorted({address for address in requests
                      if urlsplit(address).scheme not in ("data", "blob", "about")
                      and urlsplit(address).hostname not in ("127.0.0.1", "localhost")})
    assert not outside, f"requests left the machine: {outside[:5]}"
    assert sorted(p.name for p in shots.glob("*.png")) == ["1-data-import.png", "2-label.png", "3-train-running.png",
                                                           "3-train.png", "4-compare.png", "5-map.png"]
