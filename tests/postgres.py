"""A throw-away PostgreSQL server for the storage tests (Debian's postgresql, loopback only)."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as_postgres(command: list[str]) -> None:
    line = shlex.join(command)
    if os.geteuid() == 0:  # initdb refuses to run as root
        subprocess.run(["su", "postgres", "-c", line], check=True, capture_output=True)
    else:
        subprocess.run(command, check=True, capture_output=True)


@contextmanager
def temporary_postgres(folder: Path) -> Iterator[str]:
    """Start a cluster in ``folder`` on a free loopback port; yield its SQLAlchemy URL; stop it."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)")
    bin_dir = Path(binaries[-1])
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    _run_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "embtune"])
    _run_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
                      "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"postgresql+psycopg2://embtune@127.0.0.1:{port}/postgres"
    finally:
        _run_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"])
