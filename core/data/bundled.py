"""The data sets embtune ships: the demo catalogue and the general reference set.

They live inside the package (``core/data/catalogue``, ``core/data/general``) so a fresh
install can run the demo, the tests and the forgetting check with no download.
"""

from __future__ import annotations

from pathlib import Path

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
