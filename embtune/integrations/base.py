"""What both framework adapters share: the missing-extra error and loading a model once.

Both adapters accept the same model names as the CLI (``default``, a local folder, a hub id,
or ``run:NAME`` for a finished training run), so a model proven with ``embtune evaluate`` is
the one a LangChain or LlamaIndex pipeline gets, by the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import EmbtuneError

if TYPE_CHECKING:
    from core.embedders import TextEmbedder


class MissingExtraError(EmbtuneError, ImportError):
    """A framework adapter imported without its extra installed.

    An ``ImportError`` so that code probing for optional integrations with
    ``except ImportError`` keeps working; an ``EmbtuneError`` so the CLI prints it as one line.
    """


def missing_extra(module: str, extra: str, framework: str, cause: ImportError) -> MissingExtraError:
    """The one error a user sees when a framework is not installed: which extra to install."""
    missing = cause.name or str(cause)
    return MissingExtraError(
        f"{module} needs {framework}, which is not installed ({missing} is missing): "
        f"pip install 'embtune[{extra}]'"
    )


def load_model(
    model_name: str,
    *,
    workspace: str | Path | None = None,
    db_url: str | None = None,
    device: str = "auto",
    truncate_dim: int | None = None,
    batch_size: int = 64,
    fallback: bool = False,
) -> TextEmbedder:
    """Load the embedder a spec or ``run:NAME`` names, through the project's one factory.

    ``fallback`` is off by default here, unlike the CLI: vectors written to a framework's
    vector store must all come from the model that was asked for, and a silent swap to the
    bundled model would leave a store whose later queries compare incompatible vectors.
    """
    from core.embedders import load_embedder

    spec = model_name
    if spec.startswith("run:"):
        from core.training.runs import resolve_model_spec
        from storage.db import Database
        from storage.workspace import Workspace

        spec = resolve_model_spec(spec, Database(Workspace.open(workspace).db_url(db_url)))
    return load_embedder(spec, device=device, truncate_dim=truncate_dim, batch_size=batch_size, fallback=fallback)
