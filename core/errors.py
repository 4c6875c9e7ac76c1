"""The one family of errors a user can cause.

Every ``EmbtuneError`` message is meant to be printed as it is, on one line, to the
person who made the mistake: it names the file, row, field or value at fault and, where
there is one, what to do instead. Anything that is not an ``EmbtuneError`` is a bug in
embtune and keeps its traceback.

This module imports nothing of embtune, so ``storage`` can use it without pulling torch.
"""

from __future__ import annotations


class EmbtuneError(Exception):
    """A mistake in what the user asked for or gave us (not a bug)."""


class DataError(EmbtuneError):
    """A data file that cannot be read or fails validation (names file, row, field)."""


class ImageError(DataError):
    """An image that is missing, unreadable, truncated or empty (names the file, or its position).

    ``position`` is the image's index in the batch it came in, so a caller that knows where
    the batch came from (a table's rows) can name the row too.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class ModelLoadError(EmbtuneError):
    """A model spec that cannot be turned into a working model."""


class CollectionError(EmbtuneError):
    """A collection that is missing, corrupted or built with another model."""


class DimensionMismatchError(CollectionError):
    """Vectors of one dimension offered to an index of another."""


class StorageError(EmbtuneError):
    """A database or workspace that cannot be reached or written."""


class CancelledError(EmbtuneError):
    """A long operation stopped because the caller asked it to."""


class EmbtuneWarning(UserWarning):
    """Something a user should know about work that still went ahead (a filter naming a field no item has, a
    collection repaired on open): ``warnings.warn``-ed by ``core``; the CLI prints it as one ``warning:`` line."""
