"""Reading images: the one place that turns a path, a PIL image or a NumPy array into RGB pixels.

Every image the project embeds (CLIP collections, the screenshot matcher, the demos) comes
through ``read_image`` so that the rules are the same everywhere:

- a path is decoded with PIL; a file that is missing, not an image, truncated or empty is
  refused with one ``ImageError`` line that names the file;
- a NumPy array is taken the way OpenCV hands it out: ``uint8`` in **BGR** order
  (``H×W×3``), BGRA (``H×W×4``) or grey (``H×W``), and converted to RGB;
- a huge image is downscaled on read to at most ``MAX_IMAGE_SIDE`` pixels per side (JPEG
  through the decoder's draft mode, so a 10 000×10 000 photo never fills memory at full
  size). CLIP looks at 224 pixels anyway; the limit keeps enough detail for OCR later.
  Files up to ``MAX_DECODE_PIXELS`` (a 20 000×20 000 screenshot of a wall of monitors) are
  decoded once and shrunk; larger ones are refused rather than decoded (PIL's
  decompression-bomb check, raised from its default ≈179 M pixels to that limit).

``image_content_hash`` is the content part of an embedding-cache key: the file's bytes for a
path (so a cache hit needs no decoding), the RGB pixels for an in-memory image.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.errors import ImageError

# Larger images are downscaled (aspect kept) when they are read.
MAX_IMAGE_SIDE = 2048
# The most pixels a file may have to be decoded at all (~0.5 GB as 8-bit grey, 1.5 GB as RGB, briefly).
MAX_DECODE_PIXELS = 20_000 * 20_000 + 20_000_000
# PIL refuses files above 2 × MAX_IMAGE_PIXELS; set once for the process, never lowered below a user's choice.
if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < MAX_DECODE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_DECODE_PIXELS // 2
# File extensions offered in file pickers and used to spot image columns; PIL decides what it can read.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

ImageInput = str | os.PathLike | Image.Image | np.ndarray


def describe_image(image: ImageInput, position: int | None = None) -> str:
    """How an error message names an image: its path, or its position and kind in a batch."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    where = f"image #{position}" if position is not None else "image"
    return f"{where} ({type(image).__name__})"


def image_content_hash(image: ImageInput, *, name: str | None = None) -> str:
    """sha256 of what the image is: the file bytes for a path, the RGB pixels (+ size) otherwise.

    A prefix keeps image keys apart from text keys in the shared embedding cache.
    """
    digest = hashlib.sha256(b"image\0")
    if isinstance(image, (str, os.PathLike)):
        digest.update(_read_bytes(Path(image)))
        return digest.hexdigest()
    rgb = _in_memory_rgb(image, name or describe_image(image))
    digest.update(f"pixels:{rgb.size[0]}x{rgb.size[1]}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def read_image(image: ImageInput, *, max_side: int = MAX_IMAGE_SIDE, name: str | None = None) -> Image.Image:
    """Return the image as an RGB PIL image, at most ``max_side`` pixels per side.

    ``name`` is what error messages call the image (default: its path or kind).
    """
    label = name or describe_image(image)
    if isinstance(image, (str, os.PathLike)):
        rgb = _decode_file(Path(image), label, max_side)
    else:
        rgb = _in_memory_rgb(image, label)
        if max(rgb.size) > max_side:
            rgb = rgb.copy()
            rgb.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return rgb


# What an interactive upload (a demo anyone with the link can use) may hold: 40 MP is a screenshot of
# two 5K monitors. Larger files are refused before decoding, so one upload cannot tie up a worker for
# seconds and hundreds of MB; files given on the command line keep the MAX_DECODE_PIXELS limit.
MAX_UPLOAD_PIXELS = 40_000_000


def check_upload(path: str | os.PathLike, *, name: str | None = None, max_pixels: int = MAX_UPLOAD_PIXELS) -> None:
    """Refuse an uploaded file that is not an image or has more than ``max_pixels``, reading its header only.

    A truncated file passes here (the header is whole) and is refused by ``read_image`` when decoded.
    """
    label = name or str(path)
    file = Path(path)
    if not file.is_file():
        raise ImageError(f"image file {label} does not exist")
    try:
        with Image.open(file) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageError(f"{label} is not an image PIL can read (give a PNG, JPEG, WebP, BMP, GIF or TIFF)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label} is too large to decode: at most {max_pixels // 1_000_000} MP") from None
    if width * height > max_pixels:
        raise ImageError(f"{label} is {width}×{height} ({width * height / 1e6:.0f} MP): uploads may have at most "
                         f"{max_pixels // 1_000_000} MP — crop or downscale the screenshot")


def read_images(images: Sequence[ImageInput], *, max_side: int = MAX_IMAGE_SIDE) -> list[Image.Image]:
    """``read_image`` for a batch; an error names the failing path (or ``image #i``)."""
    return [read_image(image, max_side=max_side, name=describe_image(image, i)) for i, image in enumerate(images)]


def check_image_files(paths: Sequence[str | os.PathLike], *, labels: Sequence[str] | None = None) -> None:
    """Refuse a list of image paths if any is missing, before any slow work starts.

    ``labels`` (e.g. ``"data.csv: row 3"``) say where each path came from.
    """
    for position, path in enumerate(paths):
        file = Path(path)
        if not file.is_file():
            where = f"{labels[position]}: " if labels else ""
            what = "is a folder, not an image file" if file.is_dir() else "does not exist"
            raise ImageError(f"{where}image file {file} {what}", position=position)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise ImageError(f"image file {path} is a folder, not an image file") from None
    except OSError as exc:
        raise ImageError(f"image file {path} cannot be read: {exc.strerror or exc}") from None


def _decode_file(path: Path, label: str, max_side: int) -> Image.Image:
    if not path.exists():
        raise ImageError(f"image file {label} does not exist")
    if path.is_dir():
        raise ImageError(f"image file {label} is a folder, not an image file")
    try:
        # Between PIL's warning and error limits we downscale on read instead of warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                if opened.size[0] == 0 or opened.size[1] == 0:
                    raise ImageError(f"image file {label} is empty ({opened.size[0]}×{opened.size[1]} pixels)")
                # JPEG decodes straight at a reduced scale: a huge photo never exists at full size.
                opened.draft("RGB", (max_side, max_side))
                opened.load()
                # Shrink before converting or copying (a full-size copy of a huge screenshot is hundreds of
                # MB); palette and bit images are converted first, as they would only resize by nearest neighbour.
                if opened.mode in ("RGB", "RGBA", "L"):
                    work = opened
                else:  # bilevel and 16/32-bit grey shrink as 8-bit grey (a third of RGB's memory)
                    work = opened.convert("L" if opened.mode in ("1", "I", "I;16", "F") else "RGB")
                if max(work.size) > max_side:
                    work.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
                image = work.convert("RGB") if work.mode != "RGB" else work.copy()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"image file {label} is not an image PIL can read (or it is empty, 0×0)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image file {label} is too large to decode safely ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise ImageError(f"image file {label} is truncated or corrupted ({reason})") from None
    return image


def _in_memory_rgb(image: Any, label: str) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.size[0] == 0 or image.size[1] == 0:
            raise ImageError(f"{label} is empty ({image.size[0]}×{image.size[1]} pixels)")
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        return _bgr_array_to_rgb(image, label)
    raise ImageError(f"{label} is neither an image path, a PIL image nor a NumPy array")


def _bgr_array_to_rgb(array: np.ndarray, label: str) -> Image.Image:
    """OpenCV's layout: uint8, BGR (or BGRA, or grey); returned as an RGB PIL image."""
    if array.dtype != np.uint8:
        raise ImageError(f"{label} has dtype {array.dtype}: give uint8 pixels (as cv2.imread returns)")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"{label} has shape {array.shape}: give H×W (grey), H×W×3 (BGR) or H×W×4 (BGRA)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{label} is empty ({array.shape[1]}×{array.shape[0]} pixels)")
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array)).convert("RGB")
    rgb = np.ascontiguousarray(array[:, :, 2::-1])  # BGR(A) → RGB, alpha dropped
    return Image.fromarray(rgb)
