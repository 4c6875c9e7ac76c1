"""Image embedder: an open_clip model whose two towers put images and texts in one space.

``encode(texts)`` goes through the text tower and ``encode_images(images)`` through the
vision tower of the same model, so a text query is scored against image vectors directly
("a login form" → the login screenshots). Like the text embedder, output is L2-normalised
float32, results are cached by (weights fingerprint, truncate_dim, content hash) and long
inputs report progress and honour a cancel token between chunks.

Create it with ``load_embedder("clip:...")`` (see ``core.embedders.factory``). A local model
is a folder in the layout open_clip's own hub export writes (``open_clip.push_to_hf_hub``),
which ``open_clip.create_model("local-dir:FOLDER")`` reads back:

``open_clip_config.json``
    ``{"model_cfg": {...architecture: embed_dim, vision_cfg, text_cfg...},
    "preprocess_cfg": {"mean": [...], "std": [...], "interpolation": ..., "resize_mode": ...}}``
``open_clip_model.safetensors`` (or ``open_clip_pytorch_model.bin``)
    the model's ``state_dict``.
Tokenizer files, only when ``text_cfg`` names an ``hf_tokenizer_name``
    (the default CLIP tokenizer ships inside open_clip).

``save_clip_folder`` writes that layout (atomically, file by file), so a fine-tuned or
converted model can be saved and loaded back with ``clip:/path/to/folder``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.embedders.base import Embedder, normalize_rows
from core.embedders.cache import CacheKey, EmbeddingCache
from core.embedders.text import weights_fingerprint
from core.errors import EmbtuneError, ImageError
from core.images import MAX_IMAGE_SIDE, ImageInput, describe_image, image_content_hash, read_image
from core.progress import CancelToken, ProgressCallback

CLIP_PREFIX = "clip:"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# Images are decoded and preprocessed one batch at a time, so memory stays flat for any input size.
DEFAULT_IMAGE_BATCH = 32


class ClipEmbedder(Embedder):
    """Wraps an open_clip model + its image preprocessing + its tokenizer."""

    modality = "image"

    def __init__(
        self,
        model: Any,
        preprocess: Callable[[Any], Any],
        tokenizer: Callable[[Sequence[str]], Any],
        *,
        model_id: str,
        spec: str,
        truncate_dim: int | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = DEFAULT_IMAGE_BATCH,
        requested_spec: str | None = None,
        max_image_side: int = MAX_IMAGE_SIDE,
    ) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.spec = spec
        self.requested_spec = requested_spec or spec
        self.cache = cache
        self.batch_size = batch_size
        self.max_image_side = max_image_side
        self.full_dimension = int(self._text_tensor([""], 1).shape[1])
        if truncate_dim is not None and not 0 < truncate_dim <= self.full_dimension:
            raise EmbtuneError(f"truncate_dim {truncate_dim} is not possible for {model_id}: "
                               f"choose 1..{self.full_dimension} (its dimension)")
        self.truncate_dim = truncate_dim
        self._fingerprint: str | None = None

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    @property
    def fingerprint(self) -> str:
        """Weights + preprocessing: the same weights with another image size give other vectors."""
        if self._fingerprint is None:
            digest = hashlib.sha256(weights_fingerprint(self.model).encode())
            digest.update(repr(self.preprocess).encode())
            digest.update(f"max_side={self.max_image_side}".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def with_truncate_dim(self, truncate_dim: int | None) -> ClipEmbedder:
        """The same loaded model giving vectors cut to ``truncate_dim`` (shares weights and cache)."""
        twin = object.__new__(ClipEmbedder)
        twin.__dict__.update(self.__dict__)
        if truncate_dim is not None and not 0 < truncate_dim <= self.full_dimension:
            raise EmbtuneError(f"truncate_dim {truncate_dim} is not possible for {self.model_id}: "
                               f"choose 1..{self.full_dimension} (its dimension)")
        twin.truncate_dim = truncate_dim
        return twin

    # -- text tower (``Embedder.encode``: CLIP has no prompts, so both sides read the same) ----------

    def _run_texts(self, texts: list[str], prompt: str, batch_size: int) -> np.ndarray:
        return self._finish(self._text_tensor([prompt + text for text in texts], batch_size))

    # -- vision tower -----------------------------------------------------------------------

    def encode_images(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> np.ndarray:
        """Embed images (paths, PIL images or OpenCV-style BGR uint8 arrays) → (n, dimension).

        A bad image raises ``ImageError`` naming its path (or position); ``error.position`` is
        its index in ``images``. Cached images are neither decoded nor shown to the model.
        """
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
        items: list[ImageInput] = [images] if single else list(images)  # type: ignore[list-item,arg-type]
        keys: list[CacheKey] = []
        if self.caching:
            for position, image in enumerate(items):
                with _at(position):
                    keys.append(self.cache_key(image_content_hash(image, name=describe_image(image, position)),
                                               hashed=True))
        # One batch per chunk, so only one batch of decoded pixels is ever held in memory.
        output = self._encode_cached(items, keys, self._run_images, task="encode images", unit="image",
                                     batch_size=batch_size, show_progress=show_progress, progress=progress,
                                     cancel=cancel, chunk_batches=1)
        return output[0] if single else output

    def _finish(self, raw: Any) -> np.ndarray:
        vectors = raw.float().cpu().numpy()
        if self.truncate_dim is not None:
            vectors = vectors[:, : self.truncate_dim]
        return normalize_rows(vectors)

    def _text_tensor(self, texts: list[str], batch_size: int) -> Any:
        import torch

        device = next(self.model.parameters()).device
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(texts[start:start + batch_size]).to(device)
                parts.append(self.model.encode_text(tokens))
        return torch.cat(parts)

    def _run_images(self, images: list[ImageInput], positions: list[int], batch_size: int) -> np.ndarray:
        import torch

        pixels = []
        for position, image in zip(positions, images, strict=True):
            with _at(position):
                decoded = read_image(image, max_side=self.max_image_side, name=describe_image(image, position))
            pixels.append(self.preprocess(decoded))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            raw = self.model.encode_image(torch.stack(pixels).to(device))
        return self._finish(raw)

    def __repr__(self) -> str:
        dim = f", truncate_dim={self.truncate_dim}" if self.truncate_dim else ""
        return f"ClipEmbedder({self.model_id!r}, dimension={self.dimension}{dim}, device={self.device!r})"


@contextlib.contextmanager
def _at(position: int) -> Iterator[None]:
    """Stamp an ``ImageError`` raised inside with the image's position in its batch."""
    try:
        yield
    except ImageError as exc:
        if exc.position is None:
            exc.position = position
        raise


def save_clip_folder(model: Any, model_cfg: dict[str, Any], folder: str | Path,
                     preprocess_cfg: dict[str, Any] | None = None) -> Path:
    """Write an open_clip model in the local-folder layout ``clip:FOLDER`` loads.

    ``model_cfg`` is the architecture dict open_clip built the model from (``embed_dim``,
    ``vision_cfg``, ``text_cfg``, ...). ``preprocess_cfg`` defaults to the model's own
    mean/std, which is what open_clip's hub export records.
    """
    from safetensors.torch import save_file

    from storage.workspace import atomic_path, atomic_write_json

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    if preprocess_cfg is None:
        visual = model.visual
        preprocess_cfg = {"mean": list(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)),
                          "std": list(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711))}
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(target / WEIGHTS_NAMES[0]) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(target / CONFIG_NAME, {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg})
    return target


def read_clip_config(folder: Path) -> dict[str, Any]:
    """The folder's ``open_clip_config.json``, checked enough to give a one-line error."""
    from core.errors import ModelLoadError

    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise ModelLoadError(f"{folder} is not an open_clip model folder (no {CONFIG_NAME}; expected "
                             f"{CONFIG_NAME} + {WEIGHTS_NAMES[0]})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_file} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ModelLoadError(f"{config_file} has no \"model_cfg\" object (the open_clip architecture)")
    if not any((folder / name).is_file() for name in WEIGHTS_NAMES):
        raise ModelLoadError(f"{folder} has {CONFIG_NAME} but no weights ({' or '.join(WEIGHTS_NAMES)})")
    return config
