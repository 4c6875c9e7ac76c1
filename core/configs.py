"""One base for embtune's configs: validated at the edge by pydantic, every mistake one clear line.

A config arrives from a JSON file, CLI flags, a studio form or Python; in each case a wrong value
must name the field, the value and what is allowed — never a traceback, never a silent coercion
(``"384"`` is not a list of dimensions; ``"no"`` is not False; ``"1"`` in a file is not the number 1:
a file is validated in pydantic's strict mode, where JSON's own types must match the fields').
Subclasses declare typed fields and their ``_label`` ("training config"); this base turns
pydantic's errors into ``EmbtuneError`` and gives every config the same JSON round trip.
"""

from __future__ import annotations

import contextvars
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from core.errors import EmbtuneError

# Set while a config file is validated: every config built then (nested ones too) is validated strictly.
_STRICT: contextvars.ContextVar[bool] = contextvars.ContextVar("embtune_strict_config", default=False)


class EmbtuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=False, arbitrary_types_allowed=True)
    _label: ClassVar[str] = "config"

    def __init__(self, **values: Any) -> None:
        # BaseModel.__init__'s one call, with the strictness a file asks for (pydantic's own ``strict=`` flag of
        # model_validate does not reach a model that defines __init__).
        try:
            type(self).__pydantic_validator__.validate_python(values, self_instance=self,
                                                              strict=True if _STRICT.get() else None)
        except ValidationError as exc:
            raise EmbtuneError(self.explain(exc)) from None

    @classmethod
    def explain(cls, exc: ValidationError) -> str:
        """The first error as ``label: field=value is not allowed: why`` (``unknown key`` for extras)."""
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "value"
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(_fields_at(cls, error["loc"][:-1])))
            return f"{cls._label}: unknown key {field!r} (known: {known})"
        if error["type"] == "missing":
            return f"{cls._label}: {field!r} is required"
        message = str(error["msg"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not error["loc"]:  # a rule across fields: its message names them
            return f"{cls._label}: {message}"
        return f"{cls._label}: {field}={error.get('input')!r} is not allowed: {message}"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Any:
        if not isinstance(payload, dict):
            raise EmbtuneError(f"{cls._label}: expected an object of settings, got {type(payload).__name__}")
        return cls(**payload)

    @classmethod
    def from_json(cls, path: str | Path) -> Any:
        """A config file, strictly: a string where a number or a yes/no belongs is refused, naming the field."""
        from core.data.formats import read_json_file

        payload = read_json_file(path)
        strict = _STRICT.set(True)
        try:
            return cls.from_dict(payload)
        finally:
            _STRICT.reset(strict)

    def replace(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` (pydantic's ``model_copy`` would skip validation)."""
        return type(self)(**{**self.model_dump(), **changes})


def _fields_at(model: Any, path: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at ``path``: what an unknown key could have been."""
    for part in path:
        found = getattr(model, "model_fields", {}).get(str(part))
        model = found.annotation if found is not None else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []
