"""What lookups read while a fine-tune runs, and the swap that replaces it.

Lookups take one immutable ``Serving`` snapshot (embedder + the collection embedded with it). A
finished fine-tune's model is checkpointed (staging folder + rename) and the collection re-embedded
into a new index folder; the database row then names both in one transaction (what other processes
read) and the in-process reference is swapped under a lock — a reader gets the old pair or the new
pair, never a mix. Older outputs are pruned, the last ``KEEP_OUTPUTS`` kept.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.collection import Collection
from core.embedders.screen import is_screen_spec, parse_screen_spec
from core.errors import EmbtuneError
from storage.workspace import Workspace

# Fine-tune outputs kept per collection: the serving one and the one before it (a process that read
# the database row just before a swap may still be loading the previous files).
KEEP_OUTPUTS = 2


@dataclass(frozen=True)
class Serving:
    """What lookups use: one embedder and the collection embedded with it. Never mutated once published."""

    embedder: Any
    collection: Collection
    checkpoint: str | None

    @property
    def generation(self) -> int:
        return self.collection.info.generation

    @property
    def fingerprint(self) -> str:
        return self.embedder.fingerprint


def reembedded(old: Collection, embedder: Any, modality: str) -> Collection:
    """The same items embedded with the new model, as a new collection (the old one keeps serving)."""
    ids = old.ids
    items = [old.item(item_id) for item_id in ids]
    if modality == "image":
        vectors = embedder.encode_images([item["metadata"]["image_path"] for item in items], show_progress=False)
    else:
        vectors = embedder.encode_document([item["text"] or "" for item in items], show_progress=False)
    rebuilt = Collection(embedder.dimension, index_kind=old.info.index_kind, embedder=embedder,
                         model_spec=embedder.spec)
    rebuilt.add(ids, vectors, texts=[item["text"] for item in items], metadata=[item["metadata"] for item in items])
    rebuilt.info.generation = old.info.generation  # save() writes the next one
    return rebuilt


def embed_inputs(embedder: Any, inputs: Sequence[Any], modality: str, collection: str) -> np.ndarray:
    """Screenshots through the image side, texts as queries; the wrong kind of input is one clear error."""
    if modality == "image":
        if any(isinstance(value, str) and not Path(value).exists() for value in inputs):
            raise EmbtuneError("an image collection is matched by screenshot: give an image path, PIL image "
                               "or BGR array")
        return np.asarray(embedder.encode_images(list(inputs), show_progress=False), dtype=np.float32)
    if not all(isinstance(value, str) for value in inputs):
        raise EmbtuneError(f"collection {collection!r} holds texts: give a text, not an image")
    return np.asarray(embedder.encode_query(list(inputs), show_progress=False), dtype=np.float32)


def same_model(model_spec: str, checkpoint: str) -> bool:
    """Whether a collection's model spec names this checkpoint folder (``clip:``, ``screen:`` or plain)."""
    spec = parse_screen_spec(model_spec).text_spec if is_screen_spec(model_spec) else model_spec.removeprefix("clip:")
    try:
        return os.path.samefile(spec, checkpoint)
    except OSError:
        return False


def prune_outputs(workspace: Workspace, collection: str, keep: set[Path]) -> None:
    """Remove fine-tune outputs older than the last ``KEEP_OUTPUTS`` (never the user's own index)."""
    keep = {path.resolve() for path in keep}
    for parent, prefix in ((workspace.models_dir / "finetuned" / collection, "ckpt-"),
                           (workspace.finetuning_dir / collection, "index-")):
        if not parent.exists():
            continue
        folders = sorted((p for p in parent.iterdir() if p.is_dir() and p.name.startswith(prefix)
                          and p.name[len(prefix):].isdigit()), key=lambda p: int(p.name[len(prefix):]))
        for folder in folders[:-KEEP_OUTPUTS]:
            if folder.resolve() not in keep:
                shutil.rmtree(folder, ignore_errors=True)
