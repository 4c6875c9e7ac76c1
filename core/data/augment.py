"""Opt-in, seeded training-data augmentation: typo'd queries and mined hard negatives.

Typos teach a model that "дымо ход", "дымоход" and "lsvjxjl" are one need. They are applied
to the training split only (after the grouped split), each variant keeping its original's
group, so a test query never meets its own misspelling in training.

Hard negatives come from sentence-transformers' ``mine_hard_negatives``. Mining without a
safety margin is a known way to make a model worse: the "negatives" closest to the anchor
are often unlabelled right answers. So every mined negative is kept with its score and
flagged when it is suspiciously close to the positive (within ``relative_margin`` of the
positive's score) or labelled relevant elsewhere in the data; training uses only the
unflagged ones (and those a person confirmed) unless told otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from core.errors import DataError

# Keyboard neighbours (QWERTY rows and ЙЦУКЕН rows) for slips of the finger.
_ROWS = ["qwertyuiop", "asdfghjkl", "zxcvbnm", "йцукенгшщзхъ", "фывапролджэ", "ячсмитьбю"]
_NEIGHBOURS: dict[str, str] = {}
for _row in _ROWS:
    for _i, _ch in enumerate(_row):
        _NEIGHBOURS[_ch] = (_row[_i - 1] if _i else "") + (_row[_i + 1] if _i + 1 < len(_row) else "")
# Letters that look alike in Latin and Cyrillic (a shop's data mixes them more than one thinks).
_LOOKALIKES = dict(zip("aeopcxykmtABEKMHOPCTX", "аеорсхукмтАВЕКМНОРСТХ", strict=True))
_LOOKALIKES.update({v: k for k, v in list(_LOOKALIKES.items())})


def _split_word(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 6]
    if not long:
        return text
    i = rng.choice(long)
    cut = rng.randint(2, len(words[i]) - 2)
    words[i] = words[i][:cut] + " " + words[i][cut:]
    return " ".join(words)


def _merge_words(text: str, rng: random.Random) -> str:
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text
    i = rng.choice(spaces)
    return text[:i] + text[i + 1:]


def _letters(text: str) -> list[int]:
    return [i for i, ch in enumerate(text) if ch.isalpha()]


def _swap(text: str, rng: random.Random) -> str:
    spots = [i for i in _letters(text) if i + 1 < len(text) and text[i + 1].isalpha() and text[i] != text[i + 1]]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _drop(text: str, rng: random.Random) -> str:
    spots = _letters(text)
    if len(spots) < 4:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i + 1:]


def _double(text: str, rng: random.Random) -> str:
    spots = _letters(text)
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + text[i] + text[i:]


def _neighbour(text: str, rng: random.Random) -> str:
    spots = [i for i in _letters(text) if _NEIGHBOURS.get(text[i].lower())]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + rng.choice(_NEIGHBOURS[text[i].lower()]) + text[i + 1:]


def _lookalike(text: str, rng: random.Random) -> str:
    spots = [i for i, ch in enumerate(text) if ch in _LOOKALIKES]
    if not spots:
        return text
    i = rng.choice(spots)
    return text[:i] + _LOOKALIKES[text[i]] + text[i + 1:]


TYPO_OPERATIONS: dict[str, Callable[[str, random.Random], str]] = {
    "split": _split_word, "merge": _merge_words, "swap": _swap, "drop": _drop, "double": _double,
    "neighbour": _neighbour, "lookalike": _lookalike,
}


def typo_variants(text: str, count: int, *, seed: int = 0, operations: Sequence[str] | None = None) -> list[str]:
    """Up to ``count`` distinct misspellings of ``text`` (fewer for very short texts)."""
    names = list(operations or TYPO_OPERATIONS)
    unknown = [n for n in names if n not in TYPO_OPERATIONS]
    if unknown:
        raise DataError(f"unknown typo operation {unknown[0]!r}: choose from {', '.join(TYPO_OPERATIONS)}")
    rng = random.Random(f"{seed}:{text}")
    variants: list[str] = []
    for _ in range(count * 6):
        if len(variants) == count:
            break
        candidate = TYPO_OPERATIONS[rng.choice(names)](text, rng)
        if candidate != text and candidate not in variants:
            variants.append(candidate)
    return variants


def augment_with_typos(frame: pd.DataFrame, variants_per_anchor: int, *, seed: int = 0) -> pd.DataFrame:
    """Add typo'd copies of each distinct anchor (same positive, same group, kind ``typo_aug``)."""
    if variants_per_anchor <= 0:
        return frame
    extra = []
    for anchor, rows in frame.groupby("anchor", sort=False):
        for variant in typo_variants(str(anchor), variants_per_anchor, seed=seed):
            copies = rows.copy()
            copies["anchor"] = variant
            if "kind" in copies.columns:
                copies["kind"] = "typo_aug"
            extra.append(copies)
    return pd.concat([frame, *extra], ignore_index=True) if extra else frame


@dataclass(frozen=True)
class MinedNegative:
    anchor: str
    positive: str
    negative: str
    positive_score: float
    negative_score: float
    flag: str  # "" (clean), "close_to_positive" or "labelled_relevant"
    review: str = ""  # "", "not_relevant" (confirmed negative) or "relevant" (becomes a positive)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def usable(self) -> bool:
        """May train as a negative: clean, or confirmed by a person; never one found relevant."""
        return self.review == "not_relevant" or (self.flag == "" and self.review != "relevant")


def mine_negatives(model: Any, frame: pd.DataFrame, corpus: Sequence[str], *, num_negatives: int = 3,
                   range_max: int = 30, relative_margin: float = 0.05, relevance_threshold: float = 0.5,
                   batch_size: int = 64) -> list[MinedNegative]:
    """Mine negatives with sentence-transformers, score them, and flag the suspicious ones.

    Mining itself uses no margin so the close calls are *seen*; a negative scoring at least
    ``(1 - relative_margin)`` × the positive's score is flagged ``close_to_positive`` (the
    library's own ``relative_margin`` semantics, default 5 %), one labelled relevant to the
    anchor anywhere in the data is flagged ``labelled_relevant``.
    """
    import datasets
    from sentence_transformers.util import mine_hard_negatives

    pairs = frame[["anchor", "positive"]].drop_duplicates().reset_index(drop=True)
    prompts = getattr(model, "prompts", None) or {}  # mined the way search ranks: query prompt vs document prompt
    mined = mine_hard_negatives(
        datasets.Dataset.from_pandas(pairs, preserve_index=False), model, corpus=list(corpus),
        range_max=range_max, num_negatives=num_negatives, sampling_strategy="top", output_format="n-tuple",
        output_scores=True, batch_size=batch_size, verbose=False, query_prompt=prompts.get("query") or None,
        corpus_prompt=prompts.get("document") or None,
    )
    relevant: dict[str, set[str]] = {}
    scored = frame if "score" in frame.columns else frame.assign(score=1.0)
    for anchor, positive, score in scored[["anchor", "positive", "score"]].itertuples(index=False):
        if float(score) >= relevance_threshold:
            relevant.setdefault(anchor, set()).add(positive)
    out: list[MinedNegative] = []
    negative_columns = [c for c in mined.column_names if c.startswith("negative")]
    for row in mined:
        scores = row["scores"]
        for position, column in enumerate(negative_columns, start=1):
            negative, negative_score = row[column], float(scores[position])
            flag = "labelled_relevant" if negative in relevant.get(row["anchor"], set()) else \
                "close_to_positive" if negative_score >= (1 - relative_margin) * float(scores[0]) else ""
            out.append(MinedNegative(row["anchor"], row["positive"], negative, float(scores[0]), negative_score, flag))
    return out


def negatives_frame(mined: Sequence[MinedNegative], include_flagged: bool = False) -> pd.DataFrame:
    """Triplets (anchor, positive, negative) from the usable mined negatives."""
    chosen = [m for m in mined if (include_flagged and m.review != "relevant") or m.usable]
    return pd.DataFrame([{"anchor": m.anchor, "positive": m.positive, "negative": m.negative} for m in chosen],
                        columns=["anchor", "positive", "negative"])


def load_reviewed_negatives(path: str) -> list[MinedNegative]:
    """Mined negatives as written by a run (``mined_negatives.jsonl``), with any review marks."""
    from pathlib import Path

    file = Path(path)
    if file.is_dir():
        file = file / "mined_negatives.jsonl"
    if not file.exists():
        raise DataError(f"{file}: no mined negatives here (train with hard_negatives > 0 first)")
    from core.data.formats import read_jsonl_records

    out = []
    for line_number, record in read_jsonl_records(file):
        try:
            out.append(MinedNegative(**record))
        except TypeError as exc:
            raise DataError(f"{file}: line {line_number} is not a mined negative ({exc})") from None
    return out


def save_reviewed_negatives(path: str, mined: Sequence[MinedNegative]) -> None:
    import json
    from pathlib import Path

    from storage.workspace import atomic_write_text

    file = Path(path)
    if file.is_dir():
        file = file / "mined_negatives.jsonl"
    atomic_write_text(file, "".join(json.dumps(m.to_dict(), ensure_ascii=False) + "\n" for m in mined))
