"""The studio in a real browser (Debian's chromium driven by playwright), the way a person uses it:
import a CSV, label three pairs with the buttons, launch a 1-epoch training and see it finish, open
the map. A screenshot of each step is kept (``STUDIO_SCREENSHOTS=DIR`` keeps them there).

It never skips: a missing browser or driver is a failure that says how to install it (``make test``
installs both on a fresh machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.db import Database
from storage.runs import RunStore
from tests.conftest import COMPLETED, free_port

CHROMIUM = "/usr/bin/chromium"
STEP_TIMEOUT_MS = 120_000
PAIRS = [(f"{topic} question {n}", f"{topic} answer {n}") for topic in ("chimney", "drill", "hose", "paint")
         for n in range(4)]



@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``embtune studio`` in a subprocess on a free loopback port; stopped in teardown."""
    workspace = tmp_path / "ws"
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
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_import_label_train_and_map_in_a_real_browser(studio, tmp_path: Path, tiny_model_dir: Path) -> None:
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it)"
    from playwright.sync_api import expect, sync_playwright

    url, workspace = studio
    shots = Path(os.environ.get("STUDIO_SCREENSHOTS") or tmp_path / "screens")
    shots.mkdir(parents=True, exist_ok=True)
    items = tmp_path / "items.csv"
    items.write_text("id,name,category\n" + "".join(
        f"P{i},{text},{text.split()[0]}\n" for i, text in enumerate(
            ["chimney pipe steel", "chimney pipe", "chimney cap", "garden hose", "cordless drill", "drill bits",
             "paint white", "paint black", "hose reel", "pipe wrench"])), encoding="utf-8")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("anchor,positive\n" + "".join(f"{a},{p}\n" for a, p in PAIRS), encoding="utf-8")
    db = Database(f"sqlite:///{workspace / 'embtune.db'}")

    with sync_playwright() as playwright:
        # playwright's launch() gives the browser a fresh temporary profile of its own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})  # tall: Streamlit scrolls inside
        page.set_default_timeout(STEP_TIMEOUT_MS)
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

            # 2. Label: three pairs with the buttons, each saved at once.
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
                page.get_by_text("your label: 1").nth(count - 1).wait_for()
            page.screenshot(path=str(shots / "2-label.png"), full_page=True)
            labels = db.labels("items")
            assert [(label.query, label.score, label.annotator) for label in labels] == \
                [("chimney", 1.0, "browser-test")] * 3
            assert len({label.item_key for label in labels}) == 3

            # 3. Train: a 1-epoch run launched in its own process, followed until done.
            page.get_by_role("link", name="Train").click()
            page.get_by_text("A file on this machine").click()
            data_box = page.get_by_label("Training file or dataset folder")
            data_box.fill(str(pairs))
            data_box.press("Enter")
            page.get_by_text("16 usable rows of pairs data").wait_for()
            base_box = page.get_by_label("Base model")
            base_box.fill(str(tiny_model_dir))
            base_box.press("Enter")
            page.get_by_role("button", name="Launch").click()
            page.get_by_text("launched run-").wait_for()
            wait_until(lambda: any(run.status in (*COMPLETED, "failed") for run in RunStore(db).list()),
                       "the training run to finish", timeout=300)
            [run] = RunStore(db).list()
            assert run.status in COMPLETED, run.error  # the gate decided (a tiny random model: any verdict)
            expect(page.get_by_test_id("stMetricValue").filter(has_text=run.status)).to_be_visible(timeout=30_000)
            page.get_by_text(f"{run.status}: ", exact=False).first.wait_for()  # the gate's verdict line
            page.screenshot(path=str(shots / "3-train.png"), full_page=True)

            # 4. Map: the chart is drawn.
            page.get_by_role("link", name="Map").click()
            page.locator("[data-testid='stVegaLiteChart']").first.wait_for()
            page.get_by_text("projected in", exact=False).or_(page.get_by_text("from cache in")).first.wait_for()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(shots / "4-map.png"), full_page=True)
        finally:
            browser.close()
    assert sorted(p.name for p in shots.glob("*.png")) == ["1-data-import.png", "2-label.png", "3-train.png",
                                                           "4-map.png"]
