"""A real labelled image set that ships offline: scikit-learn's handwritten digits, as PNG files.

``sklearn.datasets.load_digits`` carries 1797 real 8×8 greyscale scans of handwritten digits
(UCI optdigits) with their labels, inside the scikit-learn wheel: no download. They are
upscaled (nearest neighbour, so no detail is invented) to ``side``×``side`` RGB PNGs, the
input an image embedder takes from disk, and listed in a CSV with a ``label`` column.
(``load_sample_images`` ships only two unlabelled photos, so it gives no labelled set.)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(folder: Path, *, per_label: int, side: int = 64, offset: int = 0) -> Path:
    """Write ``per_label`` digits of each class (skipping the first ``offset`` of each) + ``digits.csv``.

    Returns the CSV (columns id, image, label; image paths relative to the CSV's folder).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = [["id", "image", "label"]]
    for label in range(10):
        positions = np.flatnonzero(digits.target == label)[offset:offset + per_label]
        for position in positions:
            # 0..16 ink levels → dark ink on white, like a scan
            pixels = (255 - digits.images[position] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((side, side), Image.NEAREST).convert("RGB")
            name = f"images/d{position:04d}.png"
            image.save(folder / name)
            rows.append([f"d{position:04d}", name, str(label)])
    table = folder / "digits.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return table
