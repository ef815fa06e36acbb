"""A throwaway PostgreSQL server from the machine's PostgreSQL installation, for tests and benchmarks.

initdb + pg_ctl on a free loopback port in a temporary folder (as the postgres user when running
as root, since both refuse to run as root); stopped and deleted on exit.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def server_bindir() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A running throwaway server; ``stop`` and ``start`` restart it on the same port (fault tests)."""

    def __init__(self, bindir: Path, root: Path, prefix: list[str]) -> None:
        self._bindir, self._root, self._prefix = bindir, root, prefix
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"  # without a database name

    def _run(self, *cmd: str, file_size_limit: int | None = None) -> None:
        limited = [] if file_size_limit is None else [  # set past runuser, whose PAM session resets limits
            "bash", "-c", f'ulimit -S -f {-(-file_size_limit // 1024)} && exec "$0" "$@"']
        subprocess.run([*self._prefix, *limited, *cmd], check=True, capture_output=True, timeout=120)

    def start(self, file_size_limit: int | None = None) -> None:
        """Start (again, on the same port); a restart may find the port not yet free, so it tries a few times.
        With ``file_size_limit`` (bytes, rounded up to a KiB) no file of the server may grow past it: PostgreSQL ignores
        SIGXFSZ, so a write the limit cuts short is its "disk full" (a full disk's test)."""
        opts = (f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c max_connections=200")
        for attempt in range(5):
            try:
                self._run(str(self._bindir / "pg_ctl"), "-D", str(self._root / "data"), "-l", str(self._root / "server.log"),
                          "-w", "-t", "60", "-o", opts, "start", file_size_limit=file_size_limit)
                return
            except subprocess.CalledProcessError:
                if attempt == 4:
                    log = (self._root / "server.log").read_text()[-2000:] if (self._root / "server.log").exists() else ""
                    raise RuntimeError(f"the throwaway PostgreSQL server did not start again:\n{log}") from None
                time.sleep(1.0)

    def stop(self, mode: str = "fast") -> None:
        """Stop as ``pg_ctl restart`` does (fast: every connection is cut, committed work kept).
        The server runs without fsync for speed, so an ``immediate`` stop may lose committed work:
        that is for tearing it down only."""
        self._run(str(self._bindir / "pg_ctl"), "-D", str(self._root / "data"), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def throwaway_postgres(bindir: Path) -> Iterator[PgServer]:
    """A started server in a temporary folder, stopped and deleted on exit."""
    root = Path(tempfile.mkdtemp(prefix="genesis-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    root.chmod(0o700)
    server = PgServer(bindir, root, prefix)
    server._run(str(bindir / "initdb"), "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "--no-sync")
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server_url}/{name}"
