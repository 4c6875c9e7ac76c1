"""The data sets embtune ships: the demo catalogue and the general reference set.

They live inside the package (``core/data/catalogue``, ``core/data/general``) so a fresh
install can run the demo, the tests and the forgetting check with no download.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.data.formats import read_table

DATA_DIR = Path(__file__).resolve().parent
CATALOGUE_DIR = DATA_DIR / "catalogue"
GENERAL_DIR = DATA_DIR / "general"
CATALOGUE_PRODUCTS = CATALOGUE_DIR / "products.csv"
CATALOGUE_QUERIES = CATALOGUE_DIR / "queries.csv"


def catalogue_corpus() -> dict[str, str]:
    """Product id → the text that is indexed (the product name, as `make demo` indexes it)."""
    frame = read_table(CATALOGUE_PRODUCTS)
    return dict(zip(frame["id"], frame["name"], strict=True))


def ensure_bundled_catalogue(workspace: Any, db: Any, *, name: str = "catalogue",
                             say: Callable[[str], None] = print, show_progress: bool = True) -> None:
    """The studio's demo state on first start: the catalogue indexed with the bundled model, its
    labelled queries queued for labelling, and its UMAP map projected (cached). Later starts find
    all three and return at once."""
    from core.collection import Collection
    from core.collection.named import index_file
    from core.maps import compute_map
    from core.progress import progress_lines

    record = db.get_collection(name)
    if record is None:
        say(f"building collection {name!r} from the bundled catalogue (first start only)…")
        index_file(CATALOGUE_PRODUCTS, collection=name, text_column="name", id_column="id", workspace=workspace,
                   db=db, show_progress=show_progress, progress=None if show_progress else progress_lines(say))
        record = db.get_collection(name)
    queued = db.add_label_queries(name, read_table(CATALOGUE_QUERIES)["query"].astype(str), source="bundled")
    if queued:
        say(f"queued {queued} catalogue queries for labelling")
    emap = compute_map(Collection.load(record.path), method="umap", name=name, announce=say)
    if not emap.from_cache:
        say(f"projected the {name} map (UMAP, {len(emap.ids)} points) in {emap.seconds:.1f} s")
