"""Screenshots of both Gradio demos on the bundled data, taken in a real headless browser.

What issue 9's closing note asks to be shown: the product demo on a typo or split-word query
where the base model (A, the bundled ``default``) and a fine-tuned catalogue model (B) differ,
and the screenshot demo after a screenshot it has never seen was looked up and the match
confirmed ("Right" or "Wrong — it was: X"), with the fine-tuner's panel counting it.

Each demo is started in this process on 127.0.0.1 (a free port) over a temporary workspace,
then driven with playwright and Debian's chromium (``/usr/bin/chromium --no-sandbox``; playwright's
own browser download is not used). Not part of ``make test``: run it on purpose, with
``make screenshots`` or from the repository root::

    nice -n 19 .venv/bin/python benchmarks/demo_screenshots.py [--model-b PATH] [--only product|screens]

Model B: ``--model-b PATH`` (a sentence-transformers folder or any model spec), else the
fine-tuned catalogue model that ``benchmarks/catalogue_finetune.py --out /tmp/cat`` writes:
``/tmp/cat/weighted``, then ``/tmp/cat/hn-clean`` (the first that holds ``modules.json``).

The product query is picked, not hard-coded: every typo / split-word query labelled in
``core/data/catalogue/queries.csv`` is compared (the famous ones, "дымо ход" and "шуруповерт
акамуляторный", preferred on a tie); kept are those where the two top-k lists differ and B ranks
a relevant item higher than A; the script prints its choice and why.

The screenshot demo indexes the bundled screenshot set with ``screen:default`` on first start
(OCR, ~1–4 s a screen on a small CPU). Its OCR disk cache is keyed by image content, so the
script first copies the cached readings (and the rendered set) from workspaces that already
hold them (``--ocr-cache-from DIR``, else /tmp/embtune-screen-bench*, /tmp/embtune-screen-learning*
and the default workspace); without any, it indexes from scratch (10+ minutes, once).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import free_port, open_browser

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1400, "height": 1000}
FINETUNED_CANDIDATES = ("/tmp/cat/weighted", "/tmp/cat/hn-clean")
PREFERRED_QUERIES = ("дымо ход", "шуруповерт акамуляторный")
QUERY_KINDS = ("typo", "split_word")
K = 5
TIMEOUT_MS = 300_000


def serve(demo: Any) -> str:
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return f"http://127.0.0.1:{port}/"


def workspace_at(folder: str | None, prefix: str) -> Any:
    from storage.db import Database
    from storage.workspace import Workspace

    workspace = Workspace.open(folder or tempfile.mkdtemp(prefix=prefix))
    # The workspace's own SQLite file, whatever EMBTUNE_DB says: confirmations never reach a user's database.
    return workspace, Database(workspace.default_db_url)


# ---------------------------------------------------------------------------------------------- product


def model_b_path(explicit: str | None) -> str:
    if explicit:
        return explicit
    for candidate in FINETUNED_CANDIDATES:
        if (Path(candidate) / "modules.json").is_file():
            return candidate
    sys.exit(f"no fine-tuned catalogue model at {' or '.join(FINETUNED_CANDIDATES)}: train one with "
             "`benchmarks/catalogue_finetune.py --out /tmp/cat` or pass --model-b PATH")


@dataclass(frozen=True)
class Candidate:
    query: str
    kind: str
    rank_a: int | None
    """1-based rank of the first relevant item in A's top 10 (None: not there)."""
    rank_b: int | None
    hit_a: float
    hit_b: float
    ndcg_a: float
    ndcg_b: float
    differ: int
    """How many of B's top-k A's top-k does not hold."""

    def why(self) -> str:
        def rank(value: int | None) -> str:
            return f"#{value}" if value else "not in top 10"

        return (f"{self.kind} query {self.query!r}: first relevant item A {rank(self.rank_a)} → B {rank(self.rank_b)}; "
                f"hit@{K} {self.hit_a:.0f} → {self.hit_b:.0f}; NDCG@10 {self.ndcg_a:.3f} → {self.ndcg_b:.3f}; "
                f"{self.differ} of B's top {K} not in A's")


def first_relevant(hits: list[Any], judged: dict[str, float]) -> int | None:
    from core.evaluation import RELEVANCE_THRESHOLD

    for rank, hit in enumerate(hits[:10], start=1):
        if judged.get(hit.id, 0.0) >= RELEVANCE_THRESHOLD:
            return rank
    return None


def pick_query(search: Any, collection: str, model_b: str) -> Candidate:
    """The typo / split-word query that shows the difference best (printed with the runners-up)."""
    from core.evaluation import load_retrieval_set
    from demos.product_service import catalogue_labels

    data = load_retrieval_set("bundled:catalogue")
    found: list[Candidate] = []
    for query_id, text in data.queries.items():
        kind = data.query_kinds.get(query_id)
        if kind not in QUERY_KINDS:
            continue
        result = search.compare(text, collection, model_b=model_b, k=K)
        labels = catalogue_labels(text)
        if result.b is None or labels is None or not result.labelled:
            continue
        # The trimmed hits are top-k; re-rank at depth 10 for "where is the first relevant item".
        full_a = search.prepared(collection, None).search(text, 10)
        full_b = search.prepared(collection, model_b).search(text, 10)
        found.append(Candidate(text, kind, first_relevant(full_a, labels.judged), first_relevant(full_b, labels.judged),
                               result.a.hit_at_k or 0.0, result.b.hit_at_k or 0.0, result.a.ndcg_at_10 or 0.0,
                               result.b.ndcg_at_10 or 0.0, len(result.b.only_here)))

    def better(c: Candidate) -> bool:
        return c.differ > 0 and c.rank_b is not None and (c.rank_a is None or c.rank_b < c.rank_a)

    kept = [c for c in found if better(c)]
    print(f"{len(found)} labelled typo/split-word queries compared; {len(kept)} where the columns differ and B "
          "ranks a relevant item higher", flush=True)
    if not kept:
        sys.exit("model B does not rank a relevant item higher than A on any typo/split-word query: nothing to show")
    kept.sort(key=lambda c: (c.hit_b - c.hit_a, c.query in PREFERRED_QUERIES, c.ndcg_b - c.ndcg_a, c.differ),
              reverse=True)
    for c in kept[:5]:
        print("  candidate:", c.why(), flush=True)
    for name in PREFERRED_QUERIES:
        mine = next((c for c in found if c.query == name), None)
        if mine is not None:
            print(f"  {'kept' if better(mine) else 'not kept'}:", mine.why(), flush=True)
    return kept[0]


def product_screenshot(args: argparse.Namespace, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from core.collection.named import index_bundled_catalogue
    from demos.product_search import build_demo
    from demos.product_service import BUNDLED_COLLECTION, SideBySideSearch

    model_b = model_b_path(args.model_b)
    workspace, db = workspace_at(args.workspace and str(Path(args.workspace) / "product"), "embtune-shots-product-")
    print(f"product demo: workspace {workspace.root}; model A = bundled default, model B = {model_b}", flush=True)
    started = time.perf_counter()
    index_bundled_catalogue(workspace, db, device=args.device)
    print(f"  catalogue indexed in {time.perf_counter() - started:.0f} s", flush=True)
    chosen = pick_query(SideBySideSearch(workspace, db, device=args.device), BUNDLED_COLLECTION, model_b)
    print(f"chosen: {chosen.why()}", flush=True)
    if chosen.query in PREFERRED_QUERIES:
        print("  (one of the issue's own examples)", flush=True)

    demo = build_demo(workspace=workspace, db=db, model_b=model_b, device=args.device)
    url = serve(demo)
    try:
        with sync_playwright() as playwright:
            browser = open_browser(playwright)
            page = browser.new_page()
            page.set_viewport_size(VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.get_by_label("Query").fill(chosen.query)
            page.get_by_role("button", name="Search", exact=True).click()
            # Both summaries carry the labelled query's metrics once the results are in.
            page.get_by_text("NDCG@10").nth(1).wait_for()
            page.wait_for_function("document.querySelectorAll('table tbody tr').length >= 2")
            page.wait_for_timeout(1000)
            save_screenshot(page, out / "demo-product.png")
            browser.close()
    finally:
        demo.close()


def save_screenshot(page, target: Path) -> None:
    """The whole page as a PNG, and a line saying where (relative to the repository when inside it)."""
    page.screenshot(path=str(target), full_page=True)
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}", flush=True)


# ---------------------------------------------------------------------------------------------- screens


def ocr_sources(explicit: list[str] | None) -> list[Path]:
    if explicit:
        return [Path(p) for p in explicit]
    found = sorted(glob.glob("/tmp/embtune-screen-bench*")) + sorted(glob.glob("/tmp/embtune-screen-learning*"))
    found.append(str(Path(os.environ.get("EMBTUNE_HOME") or Path.home() / ".embtune")))
    return [Path(p) for p in found]


def seed_caches(workspace: Any, sources: list[Path]) -> None:
    """Copy cached OCR readings (keyed by image content) and the rendered screenshot set into the workspace."""
    ocr_target = workspace.cache_dir / "ocr"
    ocr_target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for source in sources:
        ocr = source / "cache" / "ocr"
        if ocr.is_dir() and ocr.resolve() != ocr_target.resolve():
            for entry in ocr.rglob("*"):
                target = ocr_target / entry.relative_to(ocr)
                if entry.is_file() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(entry, target)
                    copied += 1
        screens = source / "cache" / "screens"
        if screens.is_dir():
            for rendered in screens.iterdir():
                target = workspace.cache_dir / "screens" / rendered.name
                if rendered.is_dir() and (rendered / "screens.csv").is_file() and not target.exists():
                    shutil.copytree(rendered, target)
                    print(f"  rendered set {rendered.name} copied from {source}", flush=True)
    print(f"  {copied} cached OCR readings copied from {', '.join(str(s) for s in sources)}", flush=True)


def pick_screen(url: str, rows: list[dict[str, str]], folder: Path, tries: int) -> tuple[Path, str, str]:
    """An unseen (test split) screenshot: the first the demo gets wrong, else the first one (a "Right")."""
    from gradio_client import Client, handle_file

    by_workflow: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_workflow.setdefault(row["workflow_id"], []).append(row)
    order = [group[i] for i in range(max(len(g) for g in by_workflow.values()))
             for group in by_workflow.values() if i < len(group)]  # round-robin over workflows
    client = Client(url, verbose=False)
    first: tuple[Path, str, str] | None = None
    try:
        for row in order[:tries]:
            path = (folder / row["image"]).resolve()
            started = time.perf_counter()
            found = client.predict(handle_file(str(path)), "", K, api_name="/match")
            best = found["matches"][0]["workflow_id"] if found["matches"] else ""
            print(f"  {path.name}: truly {row['workflow_id']}, best match {best} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
            first = first or (path, row["workflow_id"], best)
            if best != row["workflow_id"]:
                return path, row["workflow_id"], best
    finally:
        client.close()
    assert first is not None
    return first


def screens_screenshot(args: argparse.Namespace, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from core.online import FineTunerConfig
    from core.screens import bundled_screens
    from demos.image_search import build_demo
    from demos.screen_service import ensure_bundled_screens

    workspace, db = workspace_at(args.workspace and str(Path(args.workspace) / "screens"), "embtune-shots-screens-")
    print(f"screenshot demo: workspace {workspace.root}", flush=True)
    seed_caches(workspace, ocr_sources(args.ocr_cache_from))
    started = time.perf_counter()
    ensure_bundled_screens(workspace, db, device=args.device)
    print(f"  bundled screenshot set indexed with screen:default in {time.perf_counter() - started:.0f} s",
          flush=True)
    screens = bundled_screens(workspace)
    demo = build_demo(workspace=workspace, db=db, tuner_config=FineTunerConfig(device=args.device))
    url = serve(demo)
    try:
        path, truth, best = pick_screen(url, screens.rows("test"), screens.csv.parent, args.tries)
        wrong = best != truth
        print(f"chosen: unseen {path.name} (truly {truth}); the demo's best match is {best}: "
              f"{'confirm Wrong — it was ' + truth if wrong else 'confirm Right'}", flush=True)
        with sync_playwright() as playwright:
            browser = open_browser(playwright)
            page = browser.new_page()
            page.set_viewport_size(VIEWPORT)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            page.locator("input[type=file]").first.set_input_files(str(path))
            page.get_by_text(path.name).first.wait_for()
            page.get_by_role("button", name="Look up").click()
            page.wait_for_function("document.querySelectorAll('table tbody tr').length >= 1")
            page.get_by_text("threshold").first.wait_for()
            if wrong:
                page.get_by_label("Wrong — it was:").click()
                page.get_by_role("option", name=truth, exact=True).click()
                page.get_by_role("button", name="Wrong — it was this one").click()
            else:
                page.get_by_role("button", name="Right", exact=True).click()
            page.get_by_text(f"confirmed {truth}").or_(page.get_by_text(f"recorded {truth}")).first.wait_for()
            page.get_by_text("pending 1 of").first.wait_for()
            page.wait_for_timeout(1000)
            save_screenshot(page, out / "demo-screens.png")
            browser.close()
    finally:
        demo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-b", help="fine-tuned catalogue model for the product demo's column B (default: "
                        + ", then ".join(FINETUNED_CANDIDATES) + ", the first holding modules.json)")
    parser.add_argument("--only", choices=("product", "screens"), help="take one screenshot (default: both)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"), help="folder for demo-*.png")
    parser.add_argument("--workspace", help="workspace folder to build in and reuse (default: a new temporary one)")
    parser.add_argument("--ocr-cache-from", action="append", metavar="DIR",
                        help="workspace whose cache/ocr (and rendered screens) to copy first; repeatable")
    parser.add_argument("--tries", type=int, default=60, help="unseen screenshots to try for a wrong match")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "product"):
        product_screenshot(args, out)
    if args.only in (None, "screens"):
        screens_screenshot(args, out)


if __name__ == "__main__":
    main()
