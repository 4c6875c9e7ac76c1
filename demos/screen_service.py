"""Screenshot search that learns from corrections: lookups, confirmations, and the tuner's state.

What the screenshot demo (and any other front end) needs in one object: look a screenshot or
a typed description up among recorded workflows, send "right" / "it was workflow X" to the
collection's ``LightweightFineTuner``, and read its state (pending examples, trainings run,
last loss, held-out accuracy before/after, checkpoint) while lookups keep being answered.

Lookups read the tuner's *serving* snapshot, so after a background training swaps the model
in, the next lookup uses it. Where the tuner cannot be built for the collection's model (a
model kind it does not train yet), confirmations are still stored in the database — the
examples are what a later tuner trains on — and ``tuner_message`` says why nothing trains.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.collection.named import collection_record, index_file, open_collection
from core.errors import EmbtuneError
from core.images import check_upload, image_content_hash, read_image
from core.matching import DEFAULT_GROUP_FIELD, default_threshold, match_vector
from core.online import FineTunerConfig, LightweightFineTuner, finetuning_stats
from core.progress import ProgressCallback
from core.screens import bundled_screens
from storage.db import Database
from storage.finetune import FineTuneStore
from storage.workspace import Workspace, atomic_path

# The collection the screenshot demo defaults to: the bundled set's train split, `screen:default`.
BUNDLED_SCREENS_COLLECTION = "screens"
BUNDLED_SCREENS_MODEL = "screen:default"


@dataclass(frozen=True)
class FoundWorkflow:
    workflow_id: str
    score: float
    item_id: str
    image_path: str | None


@dataclass(frozen=True)
class Lookup:
    """Top workflows for one screenshot or description, and whether the best one is trusted."""
    matches: list[FoundWorkflow]
    confident: bool
    threshold: float
    notes: list[str] = field(default_factory=list)
    model_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_bundled_screens(workspace: Workspace, db: Database, *, name: str = BUNDLED_SCREENS_COLLECTION,
                           model: str = BUNDLED_SCREENS_MODEL, device: str = "auto",
                           progress: ProgressCallback | None = None) -> bool:
    """Render the bundled screenshot set and index its train split as ``name`` if missing; True when built now.
    ``progress`` hears both long steps: rendering, then OCR + embedding (n/N each)."""
    if db.get_collection(name) is not None:
        return False
    screens = bundled_screens(workspace, progress=progress)
    index_file(screens.write_split("train"), collection=name, image_column="image", text_column="description",
               id_column="id", model=model, device=device, workspace=workspace, db=db, show_progress=False,
               progress=progress)
    return True


class ScreenSearch:
    """One image collection with workflow ids, its fine-tuner (when its model can be tuned) and its state."""
    def __init__(self, collection: str, *, workspace: Workspace, db: Database, config: Any = None,
                 threshold: float | None = None) -> None:

        collection_record(collection, db)  # an unknown name is the user's mistake, not the tuner's
        self.name = collection
        self.workspace = workspace
        self.db = db
        self.config = config or FineTunerConfig()
        self.field = self.config.field or DEFAULT_GROUP_FIELD
        self.tuner: Any = None
        self.tuner_message: str | None = None
        try:
            self.tuner = LightweightFineTuner(collection, workspace=workspace, db=db, config=self.config)
            self._collection = None
        except EmbtuneError as exc:
            self.tuner_message = f"confirmations are recorded, but this model is not fine-tuned yet: {exc}"
            self._collection = open_collection(collection, workspace=workspace, db=db, device=self.config.device)
        embedder, opened = self._serving()
        if not hasattr(embedder, "encode_images"):
            raise EmbtuneError(f"collection {collection!r} was built with the text model {opened.info.model_id}: "
                               "the screenshot demo needs an image collection (screen: or clip: model)")
        self.threshold = default_threshold(embedder) if threshold is None else threshold
        self._workflows = sorted({str(opened.item(i)["metadata"][self.field]) for i in opened.ids
                                  if opened.item(i)["metadata"].get(self.field) is not None})
        if not self._workflows:
            raise EmbtuneError(f"collection {collection!r} has no {self.field!r} metadata: index a file with a "
                               f"{self.field} column")

    @property
    def workflows(self) -> list[str]:
        return list(self._workflows)

    def _serving(self) -> tuple[Any, Any]:
        if self.tuner is not None:
            serving = self.tuner.serving  # one snapshot per lookup: embedder and index always match
            return serving.embedder, serving.collection
        return self._collection.embedder, self._collection

    def lookup(self, *, image: str | Path | None = None, text: str | None = None, k: int = 3,
               image_name: str | None = None) -> Lookup:
        """Top ``k`` workflows for an uploaded screenshot (checked: an image, not too large) or a description."""
        has_text = isinstance(text, str) and bool(text.strip())
        if image is None and not has_text:
            raise EmbtuneError("nothing to look up: upload a screenshot or type a description (e.g. 'a login form')")
        if image is not None and has_text:
            raise EmbtuneError("give a screenshot or a description, not both")
        embedder, collection = self._serving()
        notes: list[str] = []
        if image is not None:
            check_upload(image, name=image_name)
            picture = read_image(image, name=image_name)  # a truncated file fails here, with its name
            vector = np.asarray(embedder.encode_images(picture, show_progress=False), dtype=np.float32).reshape(-1)
            if hasattr(embedder, "image_notes"):
                notes = list(embedder.image_notes(picture))
        else:
            vector = np.asarray(embedder.encode_query([text.strip()], show_progress=False), dtype=np.float32)[0]
        result = match_vector(collection, vector, k, threshold=self.threshold, field=self.field,
                              model_fingerprint=getattr(embedder, "fingerprint", None))
        found = [FoundWorkflow(m.workflow_id, m.score, m.item_id,
                               collection.item(m.item_id)["metadata"].get("image_path")) for m in result.matches]
        return Lookup(found, result.confident, result.threshold, notes, result.model_fingerprint)

    def confirm(self, image: str | Path, workflow_id: str, *, image_name: str | None = None) -> str:
        """Record that the screenshot belongs to ``workflow_id``; returns what happened, in one line."""
        if image is None:
            raise EmbtuneError("confirmations need the screenshot: upload one and look it up first")
        workflow_id = str(workflow_id or "").strip()
        if workflow_id not in self._workflows:
            raise EmbtuneError(f"workflow {workflow_id!r} is not in collection {self.name!r} "
                               f"(workflows: {', '.join(self._workflows[:20])})")
        check_upload(image, name=image_name)
        picture = read_image(image, name=image_name)
        if self.tuner is not None:
            started = self.tuner.confirm(picture, workflow_id)
            stats = self.tuner.stats()
            return (f"confirmed {workflow_id}: fine-tuning started in the background" if started else
                    f"confirmed {workflow_id}: {stats.pending} of {self.config.trigger_threshold} before the next "
                    "fine-tune")
        self._record(picture, workflow_id)
        return f"recorded {workflow_id}; {self.tuner_message}"

    def _record(self, picture: Any, workflow_id: str) -> None:
        """Store the example the way the tuner does (image copied into the workspace by content)."""
        target = self.workspace.finetuning_dir / self.name / "examples" / f"{image_content_hash(picture)[:32]}.png"
        if not target.exists():
            with atomic_path(target) as tmp:
                picture.save(tmp, format="PNG")
        FineTuneStore(self.db).add_example(self.name, kind="image", input=str(target), workflow_id=workflow_id,
                                           max_examples=self.config.max_examples)

    def state(self) -> dict[str, Any]:
        """The panel's numbers: state, pending, trainings run, last loss, top-1 before/after, checkpoint."""
        stats = self.tuner.stats() if self.tuner is not None else finetuning_stats(self.db, self.name)
        last = stats.metrics_history[-1] if stats.metrics_history else {}
        return {
            "collection": self.name,
            "state": "training" if self.tuner is not None and self.tuner.training else stats.state,
            "pending": stats.pending,
            "trigger_threshold": self.config.trigger_threshold,
            "examples_kept": stats.examples_kept,
            "trainings_run": stats.trainings_run,
            "failures": stats.failures,
            "last_loss": stats.last_loss,
            "top1_before": last.get("top1_before"),
            "top1_after": last.get("top1_after"),
            "held_out": last.get("held_out"),
            "checkpoint": stats.current_checkpoint,
            "last_error": stats.last_error,
            "tuner_message": self.tuner_message,
        }
