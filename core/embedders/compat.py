"""Folders written by the main environment, read by an older one.

`.venv-onnx` must hold sentence-transformers 5.7 and transformers 4.57 (optimum-onnx's cap), while every model
folder embtune writes — the converted default, each training run — is saved by sentence-transformers 6 and
transformers 5. Two names in those folders are new to the older pair: the module path
``sentence_transformers.base.modules.normalize`` (5.7 keeps Normalize under ``sentence_transformer.modules``) and the
tokenizer class ``TokenizersBackend`` (transformers 5's one class over a ``tokenizer.json``; 4.57 reads the same
file as ``PreTrainedTokenizerFast``). Pointing the old names at their equivalents lets the folder load unchanged —
same token ids, same vectors (tests/test_backends.py) — where it otherwise fails with "Unrecognized processing
class". Nothing happens on the current libraries.
"""

from __future__ import annotations

import importlib
import sys

NEWER_MODULE_PATHS = {
    "sentence_transformers.base.modules.normalize": "sentence_transformers.sentence_transformer.modules.normalize",
}


def read_newer_folders() -> None:
    """Call right before a folder is loaded: transformers' lazy module can drop attributes set before
    sentence_transformers is first imported."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return
    for newer, older in NEWER_MODULE_PATHS.items():
        if newer not in sys.modules:
            try:
                importlib.import_module(newer)
            except ImportError:
                sys.modules[newer] = importlib.import_module(older)
    if not hasattr(transformers, "TokenizersBackend"):
        transformers.TokenizersBackend = transformers.PreTrainedTokenizerFast
