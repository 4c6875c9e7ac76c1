"""Confirmed examples: what a user said belongs to which workflow, kept for the next training.

Examples live in the database (``storage.db.FineTuneStore``), so a restart keeps them; a confirmed
image is copied into the workspace by content, so a deleted temporary screenshot cannot break a later
training, and the copy keeps the content hash the OCR and embedding caches are keyed by.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from core.collection import Collection
from core.errors import EmbtuneError
from core.images import ImageInput, image_content_hash, read_image
from storage.db import Database
from storage.finetune import FineTuneStore
from storage.workspace import Workspace, atomic_path


@dataclass(frozen=True)
class Example:
    id: int
    input: str
    workflow_id: str


class ExampleStore:
    """One collection's confirmed examples (texts as they are, images as files in the workspace)."""

    def __init__(self, collection: str, *, workspace: Workspace, db: Database, modality: str) -> None:
        self.collection = collection
        self.modality = modality
        self.store = FineTuneStore(db)
        self.folder = workspace.finetuning_dir / collection / "examples"

    def add(self, input: ImageInput | str, workflow_id: str, *, max_examples: int) -> None:
        """Keep one confirmation; the oldest beyond ``max_examples`` are dropped (with their files)."""
        stored = self._stored_input(input)
        dropped = self.store.add_example(self.collection, kind=self.modality, input=stored, workflow_id=workflow_id,
                                         max_examples=max_examples)
        self._forget_files(dropped)

    def examples(self) -> list[Example]:
        return [Example(e.id, e.input, e.workflow_id) for e in self.store.examples(self.collection)]

    def _stored_input(self, input: ImageInput | str) -> str:
        """Texts are stored as they are; images are validated and copied into the workspace (by content)."""
        if self.modality == "text":
            if not isinstance(input, str) or not input.strip():
                raise EmbtuneError(f"collection {self.collection!r} holds texts: confirm a non-empty text")
            return input.strip()
        image = read_image(input)  # one clear line for a missing, broken or empty image, now rather than later
        if isinstance(input, (str, os.PathLike)):
            # A byte copy keeps the file's content hash, the key of the OCR and embedding caches: a screen:
            # model reads the copy from the cache its match of the original filled, without running tesseract.
            target = self.folder / f"{image_content_hash(input)[:32]}{Path(input).suffix.lower() or '.png'}"
            if not target.exists():
                with atomic_path(target) as tmp:
                    shutil.copyfile(input, tmp)
            return str(target)
        target = self.folder / f"{image_content_hash(image)[:32]}.png"
        if not target.exists():
            with atomic_path(target) as tmp:
                image.save(tmp, format="PNG")
        return str(target)

    def _forget_files(self, dropped: list[str]) -> None:
        folder = self.folder.resolve()
        for value in dropped:
            path = Path(value)
            if self.modality == "image" and path.parent.resolve() == folder and \
                    not self.store.is_referenced(self.collection, value):
                path.unlink(missing_ok=True)


def workflows(collection: Collection, field: str) -> set[str]:
    """The workflows a collection's items name in their ``field`` metadata."""
    return {str(collection.item(i)["metadata"][field]) for i in collection.ids
            if collection.item(i)["metadata"].get(field) is not None}


def workflow_descriptions(collection: Collection, field: str, source: str | None) -> dict[str, str]:
    """workflow → its description: the items' ``description`` metadata, else the workflows table
    (``workflows.csv``: workflow_id, description) beside the indexed file ``source``, the layout of the
    bundled set."""
    found: dict[str, str] = {}
    for item_id in collection.ids:
        metadata = collection.item(item_id)["metadata"]
        workflow, text = metadata.get(field), metadata.get("description")
        if workflow is not None and isinstance(text, str) and text.strip():
            found.setdefault(str(workflow), text.strip())
    table = Path(source).parent / "workflows.csv" if source else None
    if table is not None and table.is_file():
        frame = pd.read_csv(table, dtype=str).fillna("")
        if {"workflow_id", "description"} <= set(frame.columns):
            for workflow, text in zip(frame["workflow_id"], frame["description"], strict=True):
                if text.strip():
                    found.setdefault(workflow.strip(), text.strip())
    return found
