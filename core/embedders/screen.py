"""Screenshot embedder with real offline weights: tesseract reads the screen, the text model embeds it.

No CLIP weights ship offline, but a UI screenshot is mostly text: what a login screen *says*
("Email address", "Password", "Sign in") identifies it better than its pixels. So
``load_embedder("screen:default")`` (or ``screen:SPEC`` for any text model spec) does:

1. read the image through ``core.images`` (paths, PIL images, OpenCV BGR arrays; the same
   errors and downscaling as every other image);
2. OCR with tesseract (``core.screens.ocr``: preprocessing chosen by measurement, word boxes, an
   in-memory LRU + on-disk cache keyed by the image content hash, optional worker processes);
3. embed the words with the text model (its own embedding cache applies);
4. optionally fuse a small layout vector — a 16×10 grid of intensity and one of edge strength,
   from the polarity-normalised grey image — as ``[√(1−w)·text, √w·layout]``. Both parts are
   unit vectors, so the fused vector is unit length and ``dimension`` = text + layout.

Text queries (``encode``) go through the same text model and are padded with zeros where the
layout part sits, so ``cos(query, screen) = √(1−w)·cos_text``: ranking screens by a text
query is exactly ranking them by their OCR text. A screen where no text was read (blank,
or text tesseract cannot see) gets a layout-only vector; ``read_screens`` / ``image_notes``
say so, and ``core.matching.match`` passes it on.

Spec: ``screen:TEXT_SPEC`` with optional settings after ``?``: ``lang=eng+rus`` (tesseract
languages, default eng+fra+rus) and ``layout=0.2`` (the layout weight w; 0 turns it off).
The canonical spec stored with a collection keeps every non-default setting, so a collection
reopens with the same embedder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image, ImageFilter

from core.embedders.base import Embedder, Side, normalize_rows
from core.embedders.cache import CacheKey, EmbeddingCache
from core.errors import EmbtuneError, ImageError, ModelLoadError
from core.images import MAX_IMAGE_SIDE, ImageInput, describe_image, image_content_hash, read_image
from core.progress import CancelToken, ProgressCallback
from core.screens.ocr import (
    DEFAULT_LANGUAGES,
    DEFAULT_PREPROCESS,
    MIN_WORD_CONFIDENCE,
    TESSERACT_CONFIG,
    OcrCache,
    OcrPool,
    OcrResult,
    check_languages,
    parse_languages,
    read_text,
    shared_ocr_cache,
)

SCREEN_PREFIX = "screen:"
# Layout weight w, from the bundled set (benchmarks/screen_set.py, docs/benchmarks.md): leave-one-out
# top-1 on the training variants is 0.963 for every w in {0, 0.05, 0.1, 0.2, 0.3, 0.5} (the text
# decides), so w is kept small and nonzero: a screen where no text is read still has a vector. On the
# unseen test variants w = 0.1 gives top-1 0.986 against 0.958 for text only (dark themes, Russian).
DEFAULT_LAYOUT_WEIGHT = 0.1
LAYOUT_GRID = (16, 10)
LAYOUT_DIM = 2 * LAYOUT_GRID[0] * LAYOUT_GRID[1]
DEFAULT_SCREEN_BATCH = 32
# How many tesseract worker processes a batch uses (default: one per core).
ENV_OCR_WORKERS = "EMBTUNE_OCR_WORKERS"


def is_screen_spec(spec: str | None) -> bool:
    return bool(spec) and spec.strip().lower().startswith(SCREEN_PREFIX)


@dataclass(frozen=True)
class ScreenSpec:
    text_spec: str
    languages: str = DEFAULT_LANGUAGES
    layout_weight: float = DEFAULT_LAYOUT_WEIGHT

    def canonical(self, text_spec: str | None = None) -> str:
        options = []
        if self.languages != DEFAULT_LANGUAGES:
            options.append(f"lang={self.languages}")
        if self.layout_weight != DEFAULT_LAYOUT_WEIGHT:
            options.append(f"layout={self.layout_weight:g}")
        return SCREEN_PREFIX + (text_spec or self.text_spec) + ("?" + "&".join(options) if options else "")


def parse_screen_spec(spec: str) -> ScreenSpec:
    """``screen:default``, ``screen:/models/run-3?lang=eng+rus&layout=0`` → its parts (one-line errors)."""
    rest = spec.strip()[len(SCREEN_PREFIX):].strip()
    text_spec, _, query = rest.partition("?")
    usage = "use screen:default or screen:TEXT_MODEL_SPEC, optionally ?lang=eng+fra+rus&layout=0.1"
    if not text_spec.strip():
        raise ModelLoadError(f"{spec!r} names no text model: {usage}")
    if text_spec.strip().lower().startswith(("clip:", SCREEN_PREFIX)):
        raise ModelLoadError(f"{spec!r}: the screenshot embedder needs a text model after screen:, not "
                             f"{text_spec.split(':')[0]}:")
    languages, weight = DEFAULT_LANGUAGES, DEFAULT_LAYOUT_WEIGHT
    # parse_qsl would turn the '+' of eng+rus into a space, so split by hand.
    for key, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True):
        if key == "lang":
            languages = parse_languages(value)
        elif key == "layout":
            try:
                weight = float(value)
            except ValueError:
                weight = -1.0
            if not 0.0 <= weight < 1.0:
                raise ModelLoadError(f"{spec!r}: layout={value} must be a weight in 0..1 (0 turns layout off)")
        else:
            raise ModelLoadError(f"{spec!r}: unknown setting {key!r}: {usage}")
    return ScreenSpec(text_spec.strip(), languages, weight)


def layout_vector(image: Image.Image) -> np.ndarray:
    """A coarse picture of the screen: mean intensity and edge strength on a 16×10 grid, unit length.

    Dark themes are inverted first, so the same screen in light and dark looks alike. A blank
    screen still gets a (flat) vector, which is why intensity is not mean-centred.
    """
    grey = image.convert("L")
    small = grey.resize((LAYOUT_GRID[0] * 16, LAYOUT_GRID[1] * 16), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    if pixels.mean() < 0.5:
        pixels = 1.0 - pixels
        small = Image.fromarray((pixels * 255).astype(np.uint8))
    edges = np.asarray(small.filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255.0
    cols, rows = LAYOUT_GRID
    intensity = pixels.reshape(rows, 16, cols, 16).mean(axis=(1, 3))
    edge = edges.reshape(rows, 16, cols, 16).mean(axis=(1, 3))
    vector = np.concatenate([intensity.ravel(), edge.ravel() * 4.0])  # edges are sparse: give them similar weight
    return normalize_rows(vector[None, :])[0]


class ScreenEmbedder(Embedder):
    """OCR (tesseract) + a text embedder (+ layout); create it with ``load_embedder("screen:...")``."""

    modality = "image"

    def __init__(
        self,
        text_embedder: Any,
        *,
        languages: str = DEFAULT_LANGUAGES,
        layout_weight: float = DEFAULT_LAYOUT_WEIGHT,
        preprocessing: Sequence[str] = DEFAULT_PREPROCESS,
        cache: EmbeddingCache | None = None,
        ocr_cache: OcrCache | None = None,
        ocr_workers: int = 1,
        batch_size: int = DEFAULT_SCREEN_BATCH,
        max_image_side: int = MAX_IMAGE_SIDE,
        requested_spec: str | None = None,
    ) -> None:
        self.text_embedder = text_embedder
        self.languages = languages
        self.layout_weight = float(layout_weight)
        self.preprocessing = tuple(preprocessing)
        self.cache = cache
        self.ocr_cache = ocr_cache or OcrCache(None)
        self.ocr_workers = max(1, int(ocr_workers))
        self.batch_size = batch_size
        self.max_image_side = max_image_side
        self.tesseract = check_languages(languages)
        self.spec = ScreenSpec(text_embedder.spec, languages, self.layout_weight).canonical()
        self.requested_spec = requested_spec or self.spec
        self.model_id = f"tesseract {self.tesseract.version.split()[0]} ({languages}) + {text_embedder.model_id}"
        self._pool: OcrPool | None = None
        self._fingerprint: str | None = None

    # -- what the collection and the tools read --------------------------------------------

    @property
    def fell_back(self) -> bool:
        return bool(getattr(self.text_embedder, "fell_back", False))

    @property
    def model(self) -> Any:
        """The text model (what a fine-tune of the screenshot embedder changes)."""
        return self.text_embedder.model

    @property
    def text_dimension(self) -> int:
        return int(self.text_embedder.dimension)

    @property
    def dimension(self) -> int:
        return self.text_dimension + (LAYOUT_DIM if self.layout_weight > 0 else 0)

    @property
    def truncate_dim(self) -> int | None:
        return self.text_embedder.truncate_dim

    @property
    def device(self) -> str:
        return self.text_embedder.device

    @property
    def fingerprint(self) -> str:
        """Text weights + everything that changes what is read or how it is fused."""
        if self._fingerprint is None:
            digest = hashlib.sha256(self.text_embedder.fingerprint.encode())
            digest.update(repr((self._ocr_settings(), self.layout_weight, LAYOUT_GRID, self.max_image_side)).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _ocr_settings(self) -> tuple[Any, ...]:
        return (self.tesseract.version, self.languages, self.preprocessing, MIN_WORD_CONFIDENCE, TESSERACT_CONFIG)

    def with_truncate_dim(self, truncate_dim: int | None) -> ScreenEmbedder:
        twin = object.__new__(ScreenEmbedder)
        twin.__dict__.update(self.__dict__)
        twin.text_embedder = self.text_embedder.with_truncate_dim(truncate_dim)
        twin._fingerprint = None
        return twin

    def with_text_embedder(self, text_embedder: Any) -> ScreenEmbedder:
        """The same OCR settings and OCR cache over another text model (e.g. a fine-tuned one)."""
        twin = object.__new__(ScreenEmbedder)
        twin.__dict__.update(self.__dict__)
        twin.text_embedder = text_embedder
        twin.spec = ScreenSpec(text_embedder.spec, self.languages, self.layout_weight).canonical()
        twin.requested_spec = twin.spec
        twin.model_id = self.model_id.rsplit(" + ", 1)[0] + " + " + text_embedder.model_id
        twin._fingerprint = None
        return twin

    # -- text queries ----------------------------------------------------------------------

    @property
    def prompts(self) -> dict[str, str]:
        return self.text_embedder.prompts

    def encode(self, texts: str | Sequence[str], *, side: Side | None = None, **kwargs: Any) -> np.ndarray:
        """Text queries through the text model, zero-padded over the layout part (unit length)."""
        single = isinstance(texts, str)
        vectors = np.atleast_2d(np.asarray(self.text_embedder.encode(texts, side=side, **kwargs), dtype=np.float32))
        padded = np.zeros((len(vectors), self.dimension), dtype=np.float32)
        padded[:, : self.text_dimension] = vectors
        return padded[0] if single else padded

    # -- screenshots -----------------------------------------------------------------------

    def read_screens(self, images: ImageInput | Sequence[ImageInput]) -> list[OcrResult]:
        """What tesseract reads on each screenshot (cached): words with boxes, ``no_text`` when none."""
        items = self._items(images)
        decoded = [self._decode(image, position) for position, image in enumerate(items)]
        return self._ocr(items, decoded, [image_content_hash(image) for image in items])

    def image_notes(self, image: ImageInput) -> list[str]:
        """Caveats about how a screenshot was embedded, for a match result (e.g. no text read)."""
        reading = self.read_screens([image])[0]
        if not reading.no_text:
            return []
        if self.layout_weight > 0:
            return [f"no text was read from {describe_image(image)}: it was matched on its layout only"]
        return [f"no text was read from {describe_image(image)} and the layout part is off (layout=0): "
                "its vector is empty, so no match means anything"]

    def encode_images(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Embed screenshots → (n, dimension); a bad image raises ``ImageError`` with its position."""
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
        items = self._items(images)
        hashes = [self._hash(image, position) for position, image in enumerate(items)]
        keys: list[CacheKey] = [self.cache_key(h, hashed=True) for h in hashes] if self.caching else []

        def run(chunk: list[ImageInput], positions: list[int], batch: int) -> np.ndarray:
            decoded = [self._decode(image, p) for image, p in zip(chunk, positions, strict=True)]
            return self._fuse(self._ocr(chunk, decoded, [hashes[p] for p in positions]), decoded)

        output = self._encode_cached(items, keys, run, task="encode", unit="image", batch_size=batch_size,
                                     show_progress=show_progress, progress=progress, cancel=cancel,
                                     chunk_batches=1, bar_from=200)
        return output[0] if single else output

    def _fuse(self, readings: list[OcrResult], decoded: list[Image.Image]) -> np.ndarray:
        texts = [reading.text for reading in readings]
        text_vectors = np.zeros((len(texts), self.text_dimension), dtype=np.float32)
        with_text = [i for i, text in enumerate(texts) if text]
        if with_text:
            # A screenshot is what gets indexed and matched against: the document side, for query and item alike
            # (two captures of one screen must land on the same vector).
            encoded = self.text_embedder.encode([texts[i] for i in with_text], side="document", show_progress=False)
            text_vectors[with_text] = np.atleast_2d(encoded)
        if self.layout_weight <= 0:
            return text_vectors
        layouts = np.stack([layout_vector(image) for image in decoded])
        fused = np.concatenate([np.sqrt(1 - self.layout_weight) * text_vectors,
                                np.sqrt(self.layout_weight) * layouts], axis=1)
        return normalize_rows(fused)  # text-less screens: layout only, back to unit length

    def _ocr(self, items: list[ImageInput], decoded: list[Image.Image], hashes: list[str]) -> list[OcrResult]:
        settings = repr(self._ocr_settings()).encode()
        ocr_keys = [hashlib.sha256(h.encode() + settings).hexdigest() for h in hashes]
        results: list[OcrResult | None] = [self.ocr_cache.get(key) for key in ocr_keys]
        todo = [i for i, result in enumerate(results) if result is None]
        if len(todo) > 1 and self.ocr_workers > 1:
            # Paths travel to the workers as paths (no pickled pixels); in-memory images as decoded.
            sent = [items[i] if isinstance(items[i], (str, os.PathLike)) else decoded[i] for i in todo]
            pool = self._pool or OcrPool(self.ocr_workers)
            self._pool = pool
            fresh = pool.map(sent, self.languages, self.preprocessing, self.max_image_side)
        else:
            fresh = [read_text(decoded[i], languages=self.languages, steps=self.preprocessing) for i in todo]
        for i, result in zip(todo, fresh, strict=True):
            results[i] = result
            self.ocr_cache.put(ocr_keys[i], result)
        return [result for result in results if result is not None]

    def close(self) -> None:
        """Stop the OCR worker processes (they also stop with the process)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @staticmethod
    def _items(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
        if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
            return [images]
        return list(images)  # type: ignore[arg-type]

    def _hash(self, image: ImageInput, position: int) -> str:
        try:
            return image_content_hash(image, name=describe_image(image, position))
        except ImageError as exc:
            exc.position = position if exc.position is None else exc.position
            raise

    def _decode(self, image: ImageInput, position: int) -> Image.Image:
        try:
            return read_image(image, max_side=self.max_image_side, name=describe_image(image, position))
        except ImageError as exc:
            exc.position = position if exc.position is None else exc.position
            raise

    def __repr__(self) -> str:
        return f"ScreenEmbedder({self.spec!r}, dimension={self.dimension})"


def load_screen_embedder(spec: str, *, load_text: Any, cache: EmbeddingCache | None, batch_size: int = 64,
                         ocr_workers: int | None = None, workspace: Any = None) -> ScreenEmbedder:
    """Build a ``ScreenEmbedder`` for a ``screen:`` spec; ``load_text(spec)`` loads the text model.

    With ``cache`` (the embedding cache) the OCR output is cached too: in a process-wide memory
    LRU and under ``cache/ocr`` of ``workspace`` (default: the one ``EMBTUNE_HOME`` names); with
    none (``compare-embedders`` timings) nothing is cached.
    """
    parsed = parse_screen_spec(spec)
    check_languages(parsed.languages)  # before loading a model: a missing tesseract is one line, at once
    text = load_text(parsed.text_spec)
    if cache is not None and cache.capacity > 0:
        from storage.workspace import Workspace

        try:
            folder = (workspace or Workspace.open()).cache_dir / "ocr"
        except EmbtuneError:
            folder = None  # an unwritable workspace only loses the on-disk OCR cache
        ocr_cache = shared_ocr_cache(folder)
    else:
        ocr_cache = OcrCache(None, capacity=0)
    workers = ocr_workers if ocr_workers is not None else int(os.environ.get(ENV_OCR_WORKERS, os.cpu_count() or 1))
    return ScreenEmbedder(text, languages=parsed.languages, layout_weight=parsed.layout_weight, cache=cache,
                          ocr_cache=ocr_cache, ocr_workers=workers, batch_size=min(batch_size, DEFAULT_SCREEN_BATCH),
                          requested_spec=spec)
