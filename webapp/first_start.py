"""The studio's demo state on its first start: the bundled catalogue indexed with the default model, its
labelled queries queued for labelling, and its UMAP map projected (cached). Later starts find all three
and return at once. ``embtune studio`` runs it before the server starts, printing each step.
"""

from __future__ import annotations

from collections.abc import Callable

from core.collection import Collection
from core.collection.named import index_bundled_catalogue
from core.data.bundled import CATALOGUE_QUERIES
from core.data.formats import read_table
from core.maps import compute_map
from core.progress import progress_lines
from storage.db import Database
from storage.workspace import Workspace


def prepare_bundled_catalogue(workspace: Workspace, db: Database, *, name: str = "catalogue",
                              say: Callable[[str], None] = print, show_progress: bool = True) -> None:
    if db.get_collection(name) is None:
        say(f"building collection {name!r} from the bundled catalogue (first start only)…")
        index_bundled_catalogue(workspace, db, name=name, show_progress=show_progress,
                                progress=None if show_progress else progress_lines(say))
    record = db.get_collection(name)
    queued = db.add_label_queries(name, read_table(CATALOGUE_QUERIES)["query"].astype(str), source="bundled")
    if queued:
        say(f"queued {queued} catalogue queries for labelling")
    emap = compute_map(Collection.load(record.path), method="umap", name=name, announce=say)
    if not emap.from_cache:
        say(f"projected the {name} map (UMAP, {len(emap.ids)} points) in {emap.seconds:.1f} s")
