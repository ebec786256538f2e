"""A real PostgreSQL server for the tests, started and stopped by the suite itself.

On loopback only, in a throw-away data directory, on a free port. As root (CI, this
machine) the server runs as the ``postgres`` user, as PostgreSQL requires; as anyone
else it runs as that user. ``.ci/run`` installs the server binaries where they are
missing; ``server_binaries()`` finds them (``PATH`` or Debian's /usr/lib/postgresql).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def server_binaries() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    binaries: Path
    folder: Path
    port: int
    user: str

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    @classmethod
    def start(cls) -> PostgresServer:
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError("PostgreSQL server binaries not found (.ci/run installs them)")
        folder = Path(tempfile.mkdtemp(prefix="whatsmate-pg-"))
        user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            folder.chmod(0o755)
            shutil.chown(folder, "postgres", "postgres")
        server = cls(binaries, folder, _free_port(), user)
        data = folder / "data"
        server._run(
            str(binaries / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "--no-sync"
        )
        server.start_again()
        return server

    def start_again(self) -> None:
        """Start the server on its data directory (again, after ``shut_down``)."""
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"), "-o", options,
            "-l", str(self.folder / "log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def signal_all(self, number: int) -> None:
        """Send signal ``number`` to the server and every backend it runs (``SIGSTOP``
        freezes the database as a paused VM would: connections stay open, nothing
        answers; ``SIGCONT`` lets it go on)."""
        head = (self.folder / "data" / "postmaster.pid").read_text().split()[0]
        children = subprocess.run(
            ["pgrep", "-P", head], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in (head, *children):
            os.kill(int(pid), number)

    def shut_down(self) -> None:
        """Stop the server as an upgrade or a failover does (every session is ended), but
        keep its data: ``start_again`` brings it back."""
        self._run(str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"),
                  "-m", "fast", "-w", "stop")  # fmt: skip

    def stop(self) -> None:
        try:
            self._run(str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"),
                      "-m", "immediate", "-w", "stop")  # fmt: skip
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
