"""Screenshot search that learns from corrections (Gradio). UI only: the logic is ``demos.screen_service``.

Run: ``embtune demo screens [--collection C] [--model SPEC] [--host H] [--port P] [--share]`` (or
``python -m demos.image_search``). By default it serves the bundled screenshot set (train split)
indexed with the offline ``screen:default`` embedder, built on first start. ``--share`` needs internet.

Service calls through ``gradio_client``:

- ``/match`` (image file or None, description, k) → JSON: workflows with scores, item ids, image
  paths, ``confident`` and the threshold, notes (e.g. no text read);
- ``/lookup`` — the same as the page shows it: (table, verdict, best screenshot);
- ``/confirm_right`` (image file, best workflow) and ``/confirm_wrong`` (image file, workflow it
  really was) → a one-line outcome; both send the example to the background fine-tuner;
- ``/state`` () → JSON: state, pending, trainings run, last loss, held-out top-1 before/after,
  checkpoint, the tuner's message.

Upload with ``gradio_client.handle_file(path)``. A bad input (nothing to look up, a file that is not
an image, a truncated one, more than 40 MP) comes back as ``gr.Error`` (``AppError``) with its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core.images import read_image
from core.progress import progress_lines
from demos.launching import serve
from demos.product_search import user_errors
from demos.screen_service import BUNDLED_SCREENS_COLLECTION, BUNDLED_SCREENS_MODEL, ScreenSearch
from storage.db import Database
from storage.workspace import Workspace

COLUMNS = ["rank", "workflow", "score", "screenshot"]
TEXT_EXAMPLES = ["a login form", "save the file as", "pay by card", "create a calendar event"]
# How often the state panel re-reads the tuner while the page is open.
STATE_REFRESH_SECONDS = 2.0

# Requests answered at once: each encodes its own image or query (no shared batching here), and more than a
# few at once on 2 cores would only contend.
DEFAULT_CONCURRENCY = 4


def _file(upload: Any) -> tuple[str | None, str | None]:
    """(path, the name the user knows it by) of an upload: gradio hands a temp path (or a FileData dict)."""
    if upload is None:
        return None, None
    path = upload.get("path") if isinstance(upload, dict) else str(upload)
    return path, Path(path).name if path else None


def _state_markdown(state: dict[str, Any]) -> str:
    def num(value: Any, digits: int = 3) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [f"**Fine-tuner — {state['collection']}: {state['state']}**",
             f"pending {state['pending']} of {state['trigger_threshold']} · trainings run {state['trainings_run']}"
             f" · failures {state['failures']} · examples kept {state['examples_kept']}",
             f"last loss {num(state['last_loss'], 4)} · held-out top-1 {num(state['top1_before'])} → "
             f"{num(state['top1_after'])} ({state['held_out'] or 0} held out)",
             f"checkpoint {state['checkpoint'] or '- (the base model)'}"]
    if state.get("last_error"):
        lines.append(f"last error: {state['last_error']}")
    if state.get("tuner_message"):
        lines.append(f"note: {state['tuner_message']}")
    return "  \n".join(lines)


def build_demo(*, workspace: Workspace | None = None, db: Database | None = None,
               collection: str = BUNDLED_SCREENS_COLLECTION, tuner_config: Any = None,
               concurrency_limit: int = DEFAULT_CONCURRENCY) -> gr.Blocks:
    """The screenshot-search page over an existing image collection with workflow ids."""
    workspace = workspace or Workspace.open()
    db = db or Database(workspace.db_url())
    service = ScreenSearch(collection, workspace=workspace, db=db, config=tuner_config)

    @user_errors
    def match(image: Any, description: str, k: int) -> dict[str, Any]:
        """Top-k workflows as JSON (the service call)."""
        path, name = _file(image)
        return service.lookup(image=path, text=description if path is None else None, k=int(k),
                              image_name=name).to_dict()

    @user_errors
    def lookup(image: Any, description: str, k: float) -> tuple[Any, str, Any, str]:
        path, name = _file(image)
        if path is not None and description and description.strip():
            description = ""  # the page keeps the last description; an upload takes precedence
        found = service.lookup(image=path, text=description, k=int(k), image_name=name)
        table = pd.DataFrame([[rank, m.workflow_id, round(m.score, 4), m.item_id]
                              for rank, m in enumerate(found.matches, start=1)], columns=COLUMNS)
        best = found.matches[0] if found.matches else None
        verdict = (f"**{best.workflow_id}** — {'confident' if found.confident else 'not confident'} "
                   f"(score {best.score:.3f}, threshold {found.threshold:.2f})" if best else "no match")
        verdict += "".join(f"  \nnote: {note}" for note in found.notes)
        picture = read_image(best.image_path) if best and best.image_path and Path(best.image_path).is_file() \
            else None
        return table, verdict, picture, best.workflow_id if best else ""

    @user_errors
    def confirm_right(image: Any, workflow: str) -> str:
        """The best match was right: confirm it."""
        path, name = _file(image)
        return service.confirm(path, workflow, image_name=name)

    @user_errors
    def confirm_wrong(image: Any, workflow: str) -> str:
        """The best match was wrong: confirm the workflow it really was."""
        path, name = _file(image)
        return service.confirm(path, workflow, image_name=name)

    def state() -> dict[str, Any]:
        return service.state()

    def state_panel() -> str:
        return _state_markdown(service.state())

    with gr.Blocks(title="embtune — screenshot search") as demo:
        gr.Markdown(f"## Which workflow is this screen from?\nCollection `{collection}`. Upload a screenshot or "
                    "describe it; then tell the fine-tuner whether the best match was right.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Screenshot", file_count="single", type="filepath")
                description = gr.Textbox(label="…or a description", placeholder="a login form")
                k = gr.Slider(1, 12, value=3, step=1, label="k")
                go = gr.Button("Look up", variant="primary")
                gr.Examples([[t] for t in TEXT_EXAMPLES], inputs=[description])
            with gr.Column():
                verdict = gr.Markdown()
                table = gr.Dataframe(headers=COLUMNS, label="Workflows", interactive=False)
                best_shot = gr.Image(label="Best match's recorded screenshot", type="pil", interactive=False)
        with gr.Row():
            best_workflow = gr.Textbox(label="Best match", interactive=False)
            right = gr.Button("Right")
            actual = gr.Dropdown(service.workflows, label="Wrong — it was:")
            wrong = gr.Button("Wrong — it was this one")
        outcome = gr.Markdown()
        panel = gr.Markdown(state_panel())
        refresh = gr.Button("Refresh state", size="sm")
        timer = gr.Timer(STATE_REFRESH_SECONDS)

        go.click(lookup, [upload, description, k], [table, verdict, best_shot, best_workflow], api_name="lookup")
        right.click(confirm_right, [upload, best_workflow], [outcome], api_name="confirm_right").then(
            state_panel, None, [panel], api_name=False)
        wrong.click(confirm_wrong, [upload, actual], [outcome], api_name="confirm_wrong").then(
            state_panel, None, [panel], api_name=False)
        refresh.click(state_panel, None, [panel], api_name=False)
        timer.tick(state_panel, None, [panel], api_name=False, concurrency_limit=None, show_progress="hidden")
        gr.api(match, api_name="match")
        gr.api(state, api_name="state")
    demo.queue(default_concurrency_limit=concurrency_limit)
    return demo


def launch(*, collection: str = BUNDLED_SCREENS_COLLECTION, model: str | None = None, host: str = "127.0.0.1",
           port: int | None = None, share: bool = False, workspace: Workspace | None = None,
           db: Database | None = None, device: str = "auto", block: bool = True) -> gr.Blocks:
    """Render and index the bundled screenshot set when it is the collection asked for and missing, then serve."""
    from core.online import FineTunerConfig
    from demos.screen_service import ensure_bundled_screens

    workspace = workspace or Workspace.open()
    db = db or Database(workspace.db_url())
    if db.get_collection(collection) is None and (collection == BUNDLED_SCREENS_COLLECTION or model):
        print(f"collection {collection!r} is missing: rendering the bundled screenshot set and indexing its train "
              f"split with {model or BUNDLED_SCREENS_MODEL} (once, a few minutes)...", flush=True)
        ensure_bundled_screens(workspace, db, name=collection, model=model or BUNDLED_SCREENS_MODEL, device=device,
                               progress=progress_lines(lambda line: print(line, flush=True)))
        print("indexed.", flush=True)
    elif model:
        record = db.get_collection(collection)
        if record is not None and record.model_spec != model:
            print(f"note: collection {collection!r} exists with {record.model_spec}; using it (give a new "
                  f"--collection name to index the bundled set with {model})", flush=True)
    demo = build_demo(workspace=workspace, db=db, collection=collection,
                      tuner_config=FineTunerConfig(device=device))
    return serve(demo, host=host, port=port, share=share, block=block)


if __name__ == "__main__":
    launch()
