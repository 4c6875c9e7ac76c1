"""What every command module shares: the global options' context, the backend option, list parsing,
and the port check done before any long start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from core.errors import EmbtuneError


@dataclass
class Context:
    workspace_dir: str | None
    db_url: str | None

    def workspace(self) -> Any:
        from storage.workspace import Workspace

        return Workspace.open(self.workspace_dir)

    def database(self) -> Any:
        from storage.db import Database

        return Database(self.workspace().db_url(self.db_url))

    def model(self, spec: str, backend: str | None = None) -> str:
        """A --model value as the embedders load it: ``run:NAME`` / ``run:latest`` become that run's folder."""
        if spec.startswith("run:"):
            from core.training.runs import resolve_model_spec

            spec = resolve_model_spec(spec, self.database())
        return with_backend(spec, backend)


# spec then carries it as a prefix (openvino:default), which is what a collection records.
BackendOption = Annotated[str | None, typer.Option("--backend", help="torch (default), onnx, onnx-int8, openvino or "
                                                   "openvino-int8: serve a text model on the CPU through "
                                                   "sentence-transformers' backend (same as an openvino:MODEL spec)")]


def with_backend(model: str, backend: str | None) -> str:
    from core.embedders.backends import backend_spec

    return backend_spec(model, backend) if backend else model


def require_free_port(host: str, port: int | None) -> None:
    """A busy or forbidden port is one clear line before any indexing, model loading or URL printing."""
    import errno
    import socket

    if port is None:
        return
    if not 0 < port < 65536:
        raise EmbtuneError(f"--port {port} is not a port number (1–65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EmbtuneError(f"--host {host!r} cannot be resolved: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers themselves bind
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise EmbtuneError(f"port {port} on {host} is already in use: stop what listens there or choose "
                                   "another with --port") from None
            raise EmbtuneError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def split_ints(value: str | None, option: str) -> list[int]:
    """``384,256`` → [384, 256]; nothing → []; anything else is one error line naming the option."""
    try:
        return [int(part) for part in (value or "").split(",") if part.strip()]
    except ValueError:
        raise EmbtuneError(f"{option} {value!r} must be whole numbers separated by commas, e.g. 384,256,128,64") \
            from None


def at_least(minimum: int) -> Callable[..., Any]:
    """An option callback refusing a count below ``minimum`` with one error line naming the option (typer's own
    ``min=`` would print the usage text as well); a count where 0 or a negative number means nothing."""

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        if value is not None and value < minimum:
            raise EmbtuneError(f"{param.opts[0]} {value} is not allowed: give a whole number of at least {minimum}")
        return value

    return check


def text_argument(value: str, what: str) -> str:
    """A text from the command line that the models can read: undecodable bytes (which Python keeps as lone
    surrogates) are one error line, before any model is loaded."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        what_is_there = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise EmbtuneError(f"the {what} is not valid UTF-8 text ({what_is_there} at character {exc.start + 1}): "
                           "check the terminal's encoding") from None
    return value


def writable_output(path: Path | None, option: str) -> Path | None:
    """``path`` (an output file option) checked before the work whose result goes there: one error line now
    rather than a lost evaluation or projection at the end."""
    if path is not None:
        from storage.workspace import check_writable

        check_writable(path, what=option)
    return path
