"""A throwaway PostgreSQL server for tests, started from Debian's binaries when present.

PostgreSQL refuses to run as root, so as root the server runs as the ``postgres`` system
user. Tests that need it skip with the reason when no ``pg_ctl`` is installed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    """Directory of the newest installed PostgreSQL's binaries, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which else None


@contextmanager
def postgres_server(port: int) -> Iterator[str]:
    """Run a fresh cluster on 127.0.0.1:``port``; yields a SQLAlchemy URL to its database."""
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("pg_ctl not found (install Debian's postgresql package)")
    root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    data = root / "data"
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
    try:
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "flywheel", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "-o",
                f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "flywheel",
                "flywheel",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://flywheel@127.0.0.1:{port}/flywheel"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)
