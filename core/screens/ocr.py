"""Reading the text on a screenshot with tesseract (through pytesseract), and caching what was read.

OCR is the slow step of the screenshot embedder (≈ 0.3–1 s per 1280×800 screen on one CPU
core, against milliseconds for the text model), so its output is cached by the image's content
hash — in memory (LRU) and as one small JSON file per image on disk in the workspace — and a
re-index, or a re-embedding after a fine-tune of the text model, never runs tesseract again.

Preprocessing (``PREPROCESS_STEPS``) turns the screenshot into what tesseract reads best; which
steps are on by default was decided by measurement on the bundled screenshot set
(``benchmarks/screen_set.py --preprocessing``, figures in docs/benchmarks.md), keeping only the
steps that read more of the screens' label words:

``gray``         luminance only (tesseract binarises grey input itself).
``invert_dark``  where the surroundings are dark (a dark theme, a coloured title bar, a primary
                 button), invert the pixels, so all text is dark on light, the polarity
                 tesseract's models were trained on.
``upscale``      screens narrower than ``UPSCALE_BELOW`` pixels are enlarged 2× (UI fonts of
                 12–14 px are below the x-height tesseract reads best).
``threshold``    local (adaptive) threshold against the mean of a 31-px window.

Tesseract is a system program: without it, or without a language's data, the functions here
raise ``OcrUnavailableError`` with one line naming the Debian package to install.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from cachetools import LRUCache
from PIL import Image

from core.errors import ModelLoadError

DEFAULT_LANGUAGES = "eng+fra+rus"
PREPROCESS_STEPS = ("gray", "invert_dark", "upscale", "threshold")
# Chosen on the bundled set (see the module docstring): the steps that read more label words.
# Measured on 12 training-variant screens (one per workflow; docs/benchmarks.md), share of the screens'
# label words read: gray 0.681, gray+invert_dark 0.667, gray+upscale 0.715, gray+invert_dark+upscale
# 0.681, all four 0.618. Tesseract 5 already reads light-on-dark text (it retries inverted lines), and
# inverting regions or binarising cut into glyphs at region borders, so only upscaling stays.
DEFAULT_PREPROCESS: tuple[str, ...] = ("gray", "upscale")
UPSCALE_BELOW = 1600
# A region whose mean luminance (31-px window) is below this counts as dark and is inverted.
DARK_LEVEL = 110
LOCAL_WINDOW = 31
# Words tesseract reports with lower confidence are mostly icons and borders read as letters.
MIN_WORD_CONFIDENCE = 30
# Tesseract's page segmentation: 11 = "sparse text, as much as possible in no particular order",
# what a UI screen is (labels scattered across the window, not paragraphs).
TESSERACT_CONFIG = "--psm 11"
INSTALL_HINT = ("apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-fra tesseract-ocr-rus "
                "(or `make ocr-deps`)")
DEFAULT_OCR_CACHE_ITEMS = 4096


class OcrUnavailableError(ModelLoadError):
    """Tesseract, or one of the requested languages, is not installed."""


@dataclass(frozen=True)
class TesseractInfo:
    command: str
    version: str
    languages: tuple[str, ...]


def _command() -> str:
    import pytesseract

    return str(pytesseract.pytesseract.tesseract_cmd)


def tesseract_info() -> TesseractInfo:
    """Tesseract's version and installed languages (asked once per command path)."""
    return _tesseract_info(_command())


@lru_cache(maxsize=8)
def _tesseract_info(command: str) -> TesseractInfo:
    try:
        version_out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=30)
        langs_out = subprocess.run([command, "--list-langs"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        raise OcrUnavailableError(f"tesseract is not installed (no program {command!r}): {INSTALL_HINT}") from None
    first = (version_out.stdout or version_out.stderr).strip().splitlines()
    version = first[0].removeprefix("tesseract ").strip() if first else "unknown"
    lines = (langs_out.stdout + langs_out.stderr).splitlines()
    languages = tuple(sorted(line.strip() for line in lines[1:] if line.strip() and " " not in line.strip()))
    return TesseractInfo(command, version, languages)


def parse_languages(languages: str | Sequence[str] | None) -> str:
    """``"eng+fra"``, ``"eng,fra"`` or ``["eng", "fra"]`` → ``"eng+fra"`` (validated as names only)."""
    if languages is None:
        return DEFAULT_LANGUAGES
    parts = languages.replace(",", "+").split("+") if isinstance(languages, str) else list(languages)
    parts = [part.strip() for part in parts if part.strip()]
    bad = [part for part in parts if not part.replace("_", "").isalnum()]
    if not parts or bad:
        raise OcrUnavailableError(f"OCR languages {languages!r} are not tesseract language codes: use e.g. "
                                  f"{DEFAULT_LANGUAGES}")
    return "+".join(parts)


def check_languages(languages: str) -> TesseractInfo:
    """Tesseract must be installed with every requested language, else one line saying what to install."""
    info = tesseract_info()
    missing = [lang for lang in languages.split("+") if lang not in info.languages]
    if missing:
        packages = " ".join(f"tesseract-ocr-{lang.replace('_', '-').lower()}" for lang in missing)
        raise OcrUnavailableError(f"tesseract {info.version} has no language data for {', '.join(missing)} "
                                  f"(installed: {', '.join(info.languages) or 'none'}): apt-get install {packages}")
    return info


def preprocess(image: Image.Image, steps: Sequence[str] = DEFAULT_PREPROCESS) -> Image.Image:
    """The screenshot as tesseract should see it (see the module docstring for each step)."""
    from scipy.ndimage import uniform_filter

    unknown = [step for step in steps if step not in PREPROCESS_STEPS]
    if unknown:
        raise ValueError(f"unknown preprocessing step(s) {unknown}: choose from {PREPROCESS_STEPS}")
    work = image.convert("L") if "gray" in steps or "invert_dark" in steps or "threshold" in steps else image
    if "upscale" in steps and work.width < UPSCALE_BELOW:
        work = work.resize((work.width * 2, work.height * 2), Image.Resampling.LANCZOS)
    if "invert_dark" in steps or "threshold" in steps:
        pixels = np.asarray(work, dtype=np.float32)
        window = LOCAL_WINDOW * (2 if "upscale" in steps and work.width >= image.width * 2 else 1)
        local = uniform_filter(pixels, size=window, mode="nearest")
        if "invert_dark" in steps:
            dark = local < DARK_LEVEL
            pixels = np.where(dark, 255.0 - pixels, pixels)
            local = np.where(dark, 255.0 - local, local)
        if "threshold" in steps:
            pixels = np.where(pixels > local - 12, 255.0, 0.0)
        work = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return work


@dataclass
class OcrWord:
    text: str
    confidence: float
    left: int
    top: int
    width: int
    height: int


@dataclass
class OcrResult:
    """What tesseract read: the words with boxes (in the original image's pixels) and their text."""

    words: list[OcrWord] = field(default_factory=list)
    languages: str = DEFAULT_LANGUAGES
    preprocessing: tuple[str, ...] = DEFAULT_PREPROCESS
    seconds: float = 0.0
    width: int = 0
    height: int = 0

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)

    @property
    def no_text(self) -> bool:
        return not self.words

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "preprocessing": list(self.preprocessing)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OcrResult:
        return cls(words=[OcrWord(**word) for word in data["words"]], languages=data["languages"],
                   preprocessing=tuple(data["preprocessing"]), seconds=float(data["seconds"]),
                   width=int(data["width"]), height=int(data["height"]))


def read_text(image: Image.Image, *, languages: str = DEFAULT_LANGUAGES,
              steps: Sequence[str] = DEFAULT_PREPROCESS, min_confidence: float = MIN_WORD_CONFIDENCE) -> OcrResult:
    """Run tesseract on one RGB image; words in reading order (block, paragraph, line, word)."""
    import pytesseract

    started = time.perf_counter()
    prepared = preprocess(image, steps)
    scale = image.width / prepared.width
    try:
        data = pytesseract.image_to_data(prepared, lang=languages, config=TESSERACT_CONFIG,
                                         output_type=pytesseract.Output.DICT)
    except pytesseract.TesseractNotFoundError:
        raise OcrUnavailableError(f"tesseract is not installed (no program {_command()!r}): {INSTALL_HINT}") from None
    except pytesseract.TesseractError as exc:
        if "Failed loading language" in str(exc) or "Error opening data file" in str(exc):
            check_languages(languages)  # names the missing package
        raise OcrUnavailableError(f"tesseract failed: {str(exc).strip().splitlines()[-1]}") from None
    words = []
    for i, text in enumerate(data["text"]):
        text = text.strip()
        confidence = float(data["conf"][i])
        if not text or confidence < min_confidence or not any(ch.isalnum() for ch in text):
            continue
        words.append(OcrWord(text, confidence, round(data["left"][i] * scale), round(data["top"][i] * scale),
                             round(data["width"][i] * scale), round(data["height"][i] * scale)))
    return OcrResult(words, languages, tuple(steps), time.perf_counter() - started, image.width, image.height)


def _worker_init() -> None:
    # Parallel workers already fill the cores: tesseract's own OpenMP threads would only fight them.
    os.environ["OMP_THREAD_LIMIT"] = "1"


def _read_path_or_image(item: Any, languages: str, steps: tuple[str, ...], max_side: int) -> OcrResult:
    from core.images import read_image

    return read_text(read_image(item, max_side=max_side), languages=languages, steps=steps)


class OcrPool:
    """Tesseract on several images at once, one worker process per core (forkserver: no torch in them)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: Any = None
        self._lock = threading.Lock()

    def map(self, items: Sequence[Any], languages: str, steps: tuple[str, ...], max_side: int) -> list[OcrResult]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                                     initializer=_worker_init)
                # Shut the workers down before interpreter teardown (else the executor's thread complains).
                atexit.register(self.close)
            executor = self._executor
        futures = [executor.submit(_read_path_or_image, item, languages, steps, max_side) for item in items]
        return [future.result() for future in futures]

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(cancel_futures=True)
                self._executor = None


_MEMORY_LOCK = threading.Lock()
_SHARED_MEMORY: LRUCache[str, OcrResult] = LRUCache(maxsize=DEFAULT_OCR_CACHE_ITEMS)


def shared_ocr_cache(folder: Path | None) -> OcrCache:
    """An OCR cache over the process-wide memory LRU, with its files under ``folder``."""
    return OcrCache(folder, memory=_SHARED_MEMORY)


def clear_shared_ocr_memory() -> None:
    with _MEMORY_LOCK:
        _SHARED_MEMORY.clear()


class OcrCache:
    """OCR results by key: an in-memory LRU in front of one JSON file per key under ``folder``.

    The key is the image content hash plus everything that changes what is read (languages,
    preprocessing, tesseract version), so another setting never reuses a reading.
    """

    def __init__(self, folder: Path | None, capacity: int = DEFAULT_OCR_CACHE_ITEMS,
                 memory: LRUCache[str, OcrResult] | None = None) -> None:
        self.folder = folder
        self.capacity = capacity
        # ``memory`` may be shared by several caches (one per embedder) so a process OCRs an image once.
        self._memory: LRUCache[str, OcrResult] = LRUCache(maxsize=max(1, capacity)) if memory is None else memory
        self._lock = _MEMORY_LOCK if memory is not None else threading.Lock()
        self.hits = self.disk_hits = self.misses = 0

    def get(self, key: str) -> OcrResult | None:
        with self._lock:
            found = self._memory.get(key)  # a hit counts as a use
            if found is not None:
                self.hits += 1
                return found
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                found = OcrResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                found = None  # a damaged cache file is only a miss
            if found is not None:
                self._remember(key, found)
                with self._lock:
                    self.disk_hits += 1
                return found
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, result: OcrResult) -> None:
        self._remember(key, result)
        path = self._path(key)
        if path is not None:
            from storage.workspace import atomic_write_json

            with contextlib.suppress(OSError):  # a read-only workspace only costs a re-OCR next time
                atomic_write_json(path, result.to_dict())

    def _remember(self, key: str, result: OcrResult) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._memory[key] = result

    def _path(self, key: str) -> Path | None:
        return None if self.folder is None else self.folder / key[:2] / f"{key}.json"

    def stats(self) -> dict[str, int]:
        return {"memory_hits": self.hits, "disk_hits": self.disk_hits, "misses": self.misses,
                "size": len(self._memory), "capacity": self.capacity}
