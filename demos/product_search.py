"""Product search, base vs fine-tuned side by side (Gradio). UI only: the logic is ``demos.product_service``.

Run: ``embtune demo product [--collection C] [--model-a SPEC] [--model-b SPEC|run:NAME] [--host H]
[--port P] [--share]`` (or ``python -m demos.product_search``). ``--share`` asks gradio for a public
``*.gradio.live`` link, which needs internet; without it the demo binds 127.0.0.1 only.

The demo doubles as a small search service through ``gradio_client``
(``Client("http://127.0.0.1:7860/")``):

- ``/compare`` (query, collection, model_a, model_b, k) → JSON: both sides' hits (id, score,
  metadata, text), items only one side found, seconds, hit@k and NDCG@10 when the query is labelled;
- ``/search`` — the same call as the page shows it: (table A, summary A, table B, summary B);
- ``/models`` (collection) → JSON: the collection's own model, its finished runs, the default model B;
- ``/collections`` () → JSON: the text collections of the workspace.

Empty model fields mean the defaults: A = the model the collection was built with, B = the newest
finished training run for that collection. A bad input comes back as a ``gr.Error`` (``AppError``
for the client) with one line saying what to change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr
import pandas as pd

from core.collection.named import index_bundled_catalogue
from core.errors import EmbtuneError
from core.training.runs import servable_spec, servable_specs
from demos.launching import serve
from demos.product_service import BUNDLED_COLLECTION, MAX_K, Comparison, SideBySideSearch, SideResult
from storage.db import Database
from storage.workspace import Workspace

# Requests answered at once per event. The handlers wait on one batching encoder per model, so more of them at
# once make bigger batches, not more threads fighting for the cores; the rest wait in gradio's queue.
DEFAULT_CONCURRENCY = 32
EXAMPLES = ["дымо ход", "шуруповерт акамуляторный", "chimney pipe", "дымоход", "cordless drill",
            "садовый шланг 20 м"]
COLUMNS = ["rank", "id", "name", "category", "score", "only here"]
# Fixed shares of the column's width (names wrap): sized to content, long names pushed score and ◆ off-screen.
COLUMN_WIDTHS = ["7%", "11%", "40%", "17%", "11%", "14%"]


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user's mistake (``EmbtuneError``) becomes a ``gr.Error``: one message, and the server keeps serving."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EmbtuneError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    return wrapper


def _table(side: SideResult | None) -> pd.DataFrame:
    if side is None:
        return pd.DataFrame(columns=COLUMNS)
    only = set(side.only_here)
    return pd.DataFrame([[rank, hit.id, hit.text or "", hit.metadata.get("category", ""), round(hit.score, 4),
                          "◆ only here" if hit.id in only else ""] for rank, hit in enumerate(side.hits, start=1)],
                        columns=COLUMNS)


def _summary(label: str, side: SideResult | None, result: Comparison) -> str:
    if side is None:
        return f"**{label}** — {result.b_note or 'no model'}"
    lines = [f"**{label}: `{side.model}`** ({side.model_id}) — {side.seconds * 1000:.1f} ms, "
             f"{len(side.only_here)} only here"]
    if result.labelled:
        lines.append(f"hit@{result.k} **{side.hit_at_k:.0f}** · NDCG@10 **{side.ndcg_at_10:.3f}** "
                     f"(labelled {result.query_kind or ''} query; relevant: {', '.join(result.relevant)})")
    else:
        lines.append("no relevance labels for this query")
    return "  \n".join(lines)


def build_demo(*, workspace: Workspace | None = None, db: Database | None = None, collection: str = BUNDLED_COLLECTION,
               model_a: str | None = None, model_b: str | None = None, device: str = "auto",
               concurrency_limit: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The product-search page over an existing collection (``launch`` builds the bundled one when missing)."""
    workspace = workspace or Workspace.open()
    db = db or Database(workspace.db_url())
    search = SideBySideSearch(workspace, db, device=device)
    search.prepared(collection, model_a)  # load model A and its index now: an unknown name fails at start
    default_b = model_b or servable_spec(collection, db)
    if default_b:
        search.prepared(collection, default_b)

    @user_errors
    def compare(query: str, collection: str, model_a: str, model_b: str, k: int) -> dict[str, Any]:
        """Both sides as JSON (the service call)."""
        return search.compare(query, (collection or "").strip(), model_a=model_a or None, model_b=model_b or None,
                              k=int(k)).to_dict()

    @user_errors
    def show(query: str, collection: str, model_a: str, model_b: str, k: float) -> tuple[Any, str, Any, str]:
        result = search.compare(query, (collection or "").strip(), model_a=model_a or None, model_b=model_b or None,
                                k=int(k))
        return _table(result.a), _summary("A", result.a, result), _table(result.b), _summary("B", result.b, result)

    @user_errors
    def models(collection: str) -> dict[str, Any]:
        name = (collection or "").strip()
        runs = servable_specs(db, name)
        return {"collection": name, "model_a": search.collection_model(name), "runs": runs,
                "model_b": servable_spec(name, db)}

    def collections() -> list[str]:
        from core.embedders import is_clip_spec, is_screen_spec

        return [r.name for r in db.list_collections() if not (is_clip_spec(r.model_spec) or
                                                              is_screen_spec(r.model_spec))]

    def refresh_pickers(collection: str) -> tuple[Any, Any]:
        found = models(collection)
        return (gr.update(value="", choices=["", found["model_a"]]),
                gr.update(value=found["model_b"] or "", choices=["", *found["runs"]]))

    runs = models(collection)
    with gr.Blocks(title="embtune — product search, A vs B") as demo:
        gr.Markdown("## Product search: model A vs model B\nThe same query, the same items, two models. "
                    "◆ marks an item only that side found. Labelled catalogue queries show hit@k and NDCG@10.")
        with gr.Row():
            query = gr.Textbox(label="Query", placeholder="e.g. дымо ход", scale=4)
            k = gr.Slider(1, MAX_K, value=5, step=1, label="k")
        with gr.Row():
            collection_box = gr.Dropdown(collections() or [collection], value=collection, label="Collection",
                                         allow_custom_value=True)
            model_a_box = gr.Dropdown(["", runs["model_a"]], value=model_a or "", allow_custom_value=True,
                                      label="Model A (empty: the collection's model)")
            model_b_box = gr.Dropdown(["", *runs["runs"]], value=default_b or "", allow_custom_value=True,
                                      label="Model B (run:NAME or a model spec; empty: newest finished run)")
        button = gr.Button("Search", variant="primary")
        with gr.Row():
            with gr.Column():
                summary_a = gr.Markdown("**A**")
                table_a = gr.Dataframe(headers=COLUMNS, label="Model A", interactive=False, wrap=True,
                                       column_widths=COLUMN_WIDTHS)
            with gr.Column():
                summary_b = gr.Markdown("**B**" if default_b else
                                        f"**B** — no fine-tuned run yet for collection {collection!r}")
                table_b = gr.Dataframe(headers=COLUMNS, label="Model B", interactive=False, wrap=True,
                                       column_widths=COLUMN_WIDTHS)
        inputs = [query, collection_box, model_a_box, model_b_box, k]
        outputs = [table_a, summary_a, table_b, summary_b]
        gr.Examples([[q] for q in EXAMPLES], inputs=[query], label="Examples (typo, split-word, cross-language)")
        button.click(show, inputs, outputs, api_name="search")
        query.submit(show, inputs, outputs, api_name=False)
        collection_box.change(refresh_pickers, [collection_box], [model_a_box, model_b_box], api_name=False)
        # The service call skips gradio's queue (a plain POST answered in a worker thread): concurrent calls meet
        # in the batching encoders anyway, and the queue's event stream cost more than the search at one client.
        gr.api(compare, api_name="compare", queue=False)
        gr.api(models, api_name="models")
        gr.api(collections, api_name="collections")
    demo.queue(default_concurrency_limit=concurrency_limit)
    return demo


def launch(*, collection: str = BUNDLED_COLLECTION, model_a: str | None = None, model_b: str | None = None,
           host: str = "127.0.0.1", port: int | None = None, share: bool = False, workspace: Workspace | None = None,
           db: Database | None = None, device: str = "auto", block: bool = True) -> gr.Blocks:
    """Build the bundled catalogue when it is the one asked for and missing, then serve the page."""
    workspace = workspace or Workspace.open()
    db = db or Database(workspace.db_url())
    if collection == BUNDLED_COLLECTION and db.get_collection(collection) is None:
        print(f"collection {collection!r} is missing: indexing the bundled catalogue with the bundled model "
              "(once, about a minute)...", flush=True)
        index_bundled_catalogue(workspace, db, device=device)
        print("indexed.", flush=True)
    demo = build_demo(workspace=workspace, db=db, collection=collection, model_a=model_a, model_b=model_b,
                      device=device)
    return serve(demo, host=host, port=port, share=share, block=block)


if __name__ == "__main__":
    launch()
