"""Fast CPU serving: sentence-transformers' own ONNX and OpenVINO backends, exported once into the model folder.

A backend is named by one string:

- ``torch`` — the model as trained (the default);
- ``onnx`` — ONNX Runtime on the graph ``export_optimized_onnx_model`` writes (O2 fusions, no approximation);
- ``onnx-int8`` — ONNX Runtime, weights quantised to int8 by ``export_dynamic_quantized_onnx_model`` (no
  calibration: activations are quantised per batch at run time);
- ``openvino`` — OpenVINO, fp32;
- ``openvino-int8`` — OpenVINO after ``export_static_quantized_openvino_model``, calibrated on texts from the
  user's own data (``embtune export --calibration``), never on a data set fetched from the hub.

A spec may carry its backend as a prefix, like ``clip:`` and ``screen:``: ``openvino:default``,
``onnx-int8:/path/to/model``. ``TextEmbedder.spec`` keeps that prefix, so a collection built with a backend records
it in its ``model_spec`` and reopens with the same one.

Exported files live beside the weights, in the ``onnx/`` and ``openvino/`` sub-folders sentence-transformers reads,
so the second load finds them and exports nothing. They are never written into the installed package of the
bundled model: that one is copied once into the workspace (``models/bundled-<name>``) and exported there. Each file
is written in a staging folder and moved in with ``os.replace``, the file the loader looks for last, so another
process sees either no export or a complete one.

The extras cannot share the main environment (see pyproject.toml): without them, asking for a backend is one
``ModelLoadError`` line naming the extra and the ``make`` target that builds its environment.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import EmbtuneError, ModelLoadError

TORCH = "torch"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
ENGINES = ("torch", "onnx", "openvino")
QUANTIZATIONS = ("int8",)
# What each engine needs importable, and how to get it.
_ENGINE_MODULES = {"onnx": ("onnxruntime", "optimum.onnxruntime"), "openvino": ("openvino", "optimum.intel.openvino")}
_ENGINE_FIX = {
    "onnx": "it needs the onnx extra, which cannot share embtune's main environment (optimum-onnx caps transformers "
            "below 4.58): build its own with `make backend-envs` and use .venv-onnx",
    "openvino": "install the openvino extra: pip install 'embtune[openvino]' (in a fresh environment: it pins "
                "transformers < 5.6), or build .venv-openvino with `make backend-envs`",
}
# Where the exported files go inside a model folder (sentence-transformers' layout) and their names.
ONNX_FILE = "onnx/model.onnx"
ONNX_OPTIMIZED_FILE = "onnx/model_O2.onnx"
# optimum names the file by its weight type, which follows the CPU preset: qint8 for avx512_vnni, quint8 for avx2.
ONNX_INT8_GLOB = "onnx/model_*int8_*.onnx"
OPENVINO_FILE = "openvino/openvino_model.xml"
OPENVINO_INT8_FILE = "openvino/openvino_model_qint8_quantized.xml"
# Static quantisation needs examples of real inputs; fewer than this many makes poor activation ranges.
MIN_CALIBRATION_TEXTS = 10
MAX_CALIBRATION_TEXTS = 300


@dataclass(frozen=True)
class Backend:
    """A parsed backend name: the engine that runs it and its quantisation (``None`` = fp32)."""

    name: str
    engine: str
    quantize: str | None = None

    @property
    def is_torch(self) -> bool:
        return self.engine == TORCH


def parse_backend(name: str | None, quantize: str | None = None) -> Backend:
    """``torch``/``onnx``/``openvino`` (with ``quantize="int8"``) or ``onnx-int8``/``openvino-int8`` → Backend."""
    text = (name or TORCH).strip().lower()
    engine, _, suffix = text.partition("-")
    quantize = (quantize or suffix).strip().lower() or None
    if engine not in ENGINES or (suffix and suffix not in QUANTIZATIONS):
        raise EmbtuneError(f"backend {name!r} is not one of {', '.join(BACKENDS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise EmbtuneError(f"quantisation {quantize!r} is not supported: use {', '.join(QUANTIZATIONS)} or none")
    if engine == TORCH and quantize:
        raise EmbtuneError("the torch backend is not quantised here: export to onnx or openvino with --quantize int8")
    return Backend(f"{engine}-{quantize}" if quantize else engine, engine, quantize)


def split_backend_spec(spec: str) -> tuple[str | None, str]:
    """``openvino:default`` → (``openvino``, ``default``); a spec without a backend prefix → (None, spec)."""
    head, sep, rest = (spec or "").partition(":")
    if sep and head.strip().lower() in BACKENDS:
        return head.strip().lower(), rest.strip()
    return None, spec


def backend_spec(spec: str, backend: str | Backend | None) -> str:
    """The spec that names ``spec`` served by ``backend`` (the torch backend adds no prefix)."""
    chosen = backend if isinstance(backend, Backend) else parse_backend(backend)
    _, bare = split_backend_spec(spec)
    return bare if chosen.is_torch else f"{chosen.name}:{bare}"


# -- which engines can load here -------------------------------------------------------------------


@cache
def engine_status(engine: str) -> tuple[bool, str]:
    """(can it load, version or why not) for ``torch``, ``onnx`` or ``openvino``; imports once per process."""
    if engine == TORCH:
        try:
            import torch
        except ImportError as exc:
            return False, str(exc)
        return True, f"torch {torch.__version__}"
    versions = []
    for module in _ENGINE_MODULES[engine]:
        try:
            imported = importlib.import_module(module)
        except Exception as exc:  # a missing module, or one built for other library versions
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return False, f"{module} cannot be imported ({reason})"
        if getattr(imported, "__version__", None) and "." not in module:
            versions.append(f"{module} {imported.__version__}")
    return True, ", ".join(versions) or "available"


def available_backends() -> list[str]:
    """The backend names this environment can load (what ``check-setup`` lists)."""
    return [name for name in BACKENDS if engine_status(parse_backend(name).engine)[0]]


def require_engine(engine: str) -> None:
    ok, why = engine_status(engine)
    if not ok:
        raise ModelLoadError(f"the {engine} backend cannot load here: {why}; {_ENGINE_FIX[engine]}")


# -- where a model's exported files are ------------------------------------------------------------


def exported_file(folder: str | Path, backend: str | Backend) -> Path | None:
    """The file a backend loads from in ``folder``, or None when it has not been exported yet."""
    chosen = backend if isinstance(backend, Backend) else parse_backend(backend)
    folder = Path(folder)
    if chosen.name == "onnx":
        candidates = [folder / ONNX_OPTIMIZED_FILE]
    elif chosen.name == "onnx-int8":
        candidates = sorted(folder.glob(ONNX_INT8_GLOB))
    elif chosen.name == "openvino":
        candidates = [folder / OPENVINO_FILE]
    elif chosen.name == "openvino-int8":
        candidates = [folder / OPENVINO_INT8_FILE]
    else:
        return None
    return next((path for path in candidates if path.is_file()), None)


def weight_files(model_file: Path) -> list[Path]:
    """The files that hold one exported model's weights (OpenVINO keeps them in a ``.bin`` beside the ``.xml``)."""
    files = [model_file]
    for sibling in (model_file.with_suffix(".bin"), model_file.with_name(model_file.name + "_data")):
        if sibling.is_file():
            files.append(sibling)
    return files


def files_fingerprint(backend: str, model_file: Path) -> str:
    """A hash of an exported model's files: it changes with the weights, and differs per backend and quantisation
    (an int8 model's vectors must never be served from an fp32 model's cache entries)."""
    digest = hashlib.sha256(f"backend:{backend}".encode())
    for path in weight_files(model_file):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def serving_folder(kind: str, location: str, *, workspace: Any = None, name: str | None = None,
                   model: Any = None) -> Path:
    """The model folder exports are written into.

    A local folder is used as it is (exports go beside its weights). The bundled model is copied once into the
    workspace, so nothing is ever written into site-packages; a hub model is saved there by sentence-transformers.
    """
    if kind == "path":
        folder = Path(location)
        if not os.access(folder, os.W_OK):
            raise ModelLoadError(f"{folder} is not writable: the exported model is saved beside its weights; "
                                 "copy the folder somewhere writable")
        return folder
    from storage.workspace import Workspace, atomic_folder

    workspace = workspace if workspace is not None and hasattr(workspace, "models_dir") else Workspace.open(workspace)
    safe = (name or location).replace("/", "--").replace("\\", "--").replace(":", "-")
    target = workspace.models_dir / (f"bundled-{safe}" if kind == "bundled" else f"hub-{safe}")
    if not (target / "modules.json").exists() and not (target / "config.json").exists():
        try:
            with atomic_folder(target) as staging:
                if kind == "bundled":
                    shutil.copytree(location, staging, dirs_exist_ok=True)
                else:  # a hub model, already loaded by the caller (which knows how to fail offline)
                    model.save(str(staging))
        except EmbtuneError:
            if not target.exists():  # another process made it first: use theirs
                raise
    return target


# -- exporting and loading ---------------------------------------------------------------------------


def load_backend_model(folder: Path, backend: Backend, *, calibration: Sequence[str] | None = None) -> tuple[Any, Path]:
    """A ``SentenceTransformer`` running ``folder`` on ``backend`` (exported first when needed) and the file it
    runs; ``calibration`` texts are only used by an ``openvino-int8`` export."""
    require_engine(backend.engine)
    model_file = exported_file(folder, backend) or export_backend(folder, backend, calibration=calibration)
    return _construct(folder, backend.engine, model_file), model_file


def export_backend(folder: Path, backend: Backend, *, calibration: Sequence[str] | None = None) -> Path:
    """Write ``backend``'s files into ``folder`` through sentence-transformers' export helpers; returns the file."""
    require_engine(backend.engine)
    if backend.name == "openvino-int8":
        texts = _calibration_texts(calibration)  # checked before anything heavy runs
    with tempfile.TemporaryDirectory(prefix=".export-", dir=folder) as staging_dir:
        staging = Path(staging_dir)
        try:
            if backend.name == "onnx":
                _export_onnx(folder, staging)
            elif backend.name == "onnx-int8":
                _export_onnx_int8(folder, staging)
            elif backend.name == "openvino":
                _export_openvino(folder, staging)
            elif backend.name == "openvino-int8":
                _export_openvino_int8(folder, staging, texts)
        except EmbtuneError:
            raise
        except Exception as exc:  # optimum and the runtimes raise many types; the user needs one line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"could not export {folder} to {backend.name}: {reason}") from exc
    model_file = exported_file(folder, backend)
    if model_file is None:  # the helpers wrote nowhere we know: a library change, not a user mistake
        raise RuntimeError(f"the {backend.name} export of {folder} wrote no file where embtune looks for it")
    return model_file


def _construct(folder: Path, engine: str, model_file: Path | None, *, export: bool = False) -> Any:
    from sentence_transformers import SentenceTransformer

    from core.embedders.compat import read_newer_folders

    read_newer_folders()
    model_kwargs: dict[str, Any] = {"export": True} if export else \
        {"file_name": model_file.relative_to(folder).as_posix()} if model_file else {}
    model_kwargs.update(runtime_options(engine))
    try:
        return SentenceTransformer(str(folder), device="cpu", backend=engine, model_kwargs=model_kwargs,
                                   local_files_only=True)
    except Exception as exc:  # the libraries raise many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"could not load {folder} with the {engine} backend: {reason}") from exc


def runtime_options(engine: str, threads: int | None = None) -> dict[str, Any]:
    """The ``model_kwargs`` that run ``engine`` on the CPU with as many threads as torch uses here.

    Left alone, ONNX Runtime and OpenVINO each take every core whatever ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads`` say; following torch keeps a process's thread budget one setting, and comparisons fair.
    """
    import torch

    threads = threads or torch.get_num_threads()
    if engine == "onnx":
        import onnxruntime

        session = onnxruntime.SessionOptions()
        session.intra_op_num_threads = threads
        return {"provider": "CPUExecutionProvider", "session_options": session}
    if engine == "openvino":
        return {"ov_config": {"INFERENCE_NUM_THREADS": threads}}
    return {}


def _move_in(staging: Path, folder: Path, relative: str) -> None:
    """Move one exported model's files from the staging folder into the model folder, the weights before the file
    the loader looks for, each with an atomic ``os.replace``."""
    source = staging / relative
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    for path in reversed(weight_files(source)):
        os.replace(path, folder / path.relative_to(staging))


def _plain_onnx(folder: Path, staging: Path) -> Any:
    """The model exported to ONNX (``onnx/model.onnx``, written once) and loaded from it."""
    if not (folder / ONNX_FILE).is_file():
        exported = _construct(folder, "onnx", None, export=True)
        exported.save(str(staging / "plain"))
        _move_in(staging / "plain", folder, ONNX_FILE)
    return _construct(folder, "onnx", folder / ONNX_FILE)


def _export_onnx(folder: Path, staging: Path) -> None:
    from sentence_transformers import export_optimized_onnx_model

    # O2: ONNX Runtime's transformer fusions without O3's GELU approximation (O4 is fp16, GPU only).
    export_optimized_onnx_model(_plain_onnx(folder, staging), "O2", str(staging))
    _move_in(staging, folder, ONNX_OPTIMIZED_FILE)


# Instructions that multiply int8 vectors in one step (x86 VNNI and AMX, Arm's dot product). Without them an int8
# graph widens every product itself and runs at about half fp32's speed (docs/benchmarks.md, an AVX2-only EPYC).
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where the file cannot be read)."""
    try:
        return set(cpuinfo.read_text().split())
    except OSError:
        return set()


def int8_dot_product_support(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU has int8 dot-product instructions; None where the flags cannot be read (not Linux)."""
    flags = cpu_flags(cpuinfo)
    return bool(flags & set(INT8_DOT_PRODUCT_FLAGS)) if flags else None


def cpu_quantization_config() -> str:
    """The dynamic int8 preset that fits this CPU (``avx512_vnni`` where it has VNNI)."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags = cpu_flags()
    for preset, flag in (("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f")):
        if flag in flags:
            return preset
    return "avx2"


def _export_onnx_int8(folder: Path, staging: Path) -> None:
    from sentence_transformers import export_dynamic_quantized_onnx_model

    preset = cpu_quantization_config()
    export_dynamic_quantized_onnx_model(_plain_onnx(folder, staging), preset, str(staging))
    written = sorted(staging.glob(ONNX_INT8_GLOB))
    if not written:  # a library change, not a user mistake
        raise RuntimeError(f"the onnx-int8 export ({preset}) wrote no {ONNX_INT8_GLOB} file")
    _move_in(staging, folder, written[0].relative_to(staging).as_posix())


def _export_openvino(folder: Path, staging: Path) -> None:
    _construct(folder, "openvino", None, export=True).save(str(staging))
    _move_in(staging, folder, OPENVINO_FILE)


def _calibration_texts(texts: Sequence[str] | None) -> list[str]:
    unique = list(dict.fromkeys(t.strip() for t in texts or [] if isinstance(t, str) and t.strip()))
    if len(unique) < MIN_CALIBRATION_TEXTS:
        raise EmbtuneError(
            f"openvino-int8 is calibrated on your own texts and got {len(unique)} (at least {MIN_CALIBRATION_TEXTS}): "
            "embtune export MODEL --format openvino --quantize int8 --calibration FILE (a table with a text column)"
        )
    return unique[:MAX_CALIBRATION_TEXTS]


def _export_openvino_int8(folder: Path, staging: Path, texts: list[str]) -> None:
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import export_static_quantized_openvino_model

    fp32 = exported_file(folder, "openvino")
    if fp32 is None:
        _export_openvino(folder, staging)
        fp32 = folder / OPENVINO_FILE
    model = _construct(folder, "openvino", fp32)
    # The helper reads its calibration set with datasets.load_dataset: a local folder holding one CSV works offline
    # when all four dataset arguments are given.
    dataset = staging / "calibration"
    dataset.mkdir()
    import pandas as pd

    pd.DataFrame({"text": texts}).to_csv(dataset / "train.csv", index=False)
    export_static_quantized_openvino_model(
        model, OVQuantizationConfig(num_samples=len(texts)), str(staging), dataset_name=str(dataset),
        dataset_config_name="default", dataset_split="train", column_name="text",
    )
    _move_in(staging, folder, OPENVINO_INT8_FILE)
