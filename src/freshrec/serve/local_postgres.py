"""A throwaway PostgreSQL server on loopback, for the tests, the serving benchmark and trying
replicas on one machine (not for production: trust authentication, a temporary folder).

    with LocalPostgres() as pg:
        url = pg.create_database("freshrec")   # postgresql+psycopg://postgres@127.0.0.1:PORT/freshrec

Binaries: those of the `pgserver` package (a pip-installable PostgreSQL build, in the dev
extras) or of a system installation (`postgres` on PATH, /usr/lib/postgresql/*/bin).
`postgres_binaries()` returns None where neither exists. PostgreSQL refuses to run as root:
as root, the server runs as the `postgres` account if there is one, else `nobody`, with a
copy of the binaries when that account cannot run them where they are installed. `stop()`
(or leaving the `with` block) shuts the server down and deletes its folder; a process killed
with SIGKILL leaves its server running (postgres has no parent-death signal).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from freshrec.errors import ConfigError

DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_binaries() -> Path | None:
    """A folder holding `postgres` and `initdb` (pgserver's first), or None."""
    candidates: list[Path] = []
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for c in candidates:
        if (c / "postgres").is_file() and (c / "initdb").is_file():
            return c
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """`start()` runs initdb in a temporary folder and a postgres server on a free loopback
    port; `stop()` shuts it down and deletes the folder. Trust authentication, user
    `postgres`."""

    def __init__(self, bin_dir: Path | None = None) -> None:
        found = bin_dir or postgres_binaries()
        if found is None:
            raise ConfigError("no PostgreSQL binaries: pip install pgserver, or install postgres")
        self.bin_dir = found
        self.root = Path(tempfile.mkdtemp(prefix="freshrec-pg-"))
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:  # postgres will not run as root
            name = "postgres" if _has_user("postgres") else "nobody"
            pw = pwd.getpwnam(name)
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)

    # ------------------------------------------------------------------ lifecycle
    def _run(self, exe: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(self.bin_dir / exe), *args], capture_output=True, check=False, **self._as
        )

    def _runs(self) -> bool:
        """Whether the server's account can run the binaries where they are."""
        try:
            return self._run("initdb", "--version").returncode == 0
        except PermissionError:
            return False

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        """initdb + postgres; ConfigError (the folder removed) when either fails."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> LocalPostgres:
        if self._as and not self._runs():
            # the unprivileged account cannot reach the install: run a private copy, with the
            # libraries that pgserver's binaries find at $ORIGIN/../../../pgserver.libs
            copy = self.root / "install"
            prefix = self.bin_dir.parent
            shutil.copytree(prefix, copy / "pkg" / prefix.name, symlinks=True)
            libs = prefix.parent.parent / "pgserver.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy / "pgserver.libs", symlinks=True)
            for p in [copy, *copy.rglob("*")]:
                os.chown(p, self._as["user"], self._as["group"], follow_symlinks=False)
            self.bin_dir = copy / "pkg" / prefix.name / "bin"
        data = self.root / "data"
        res = self._run(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        if res.returncode != 0:
            raise ConfigError(f"initdb failed: {res.stderr.decode(errors='replace')[-2000:]}")
        log = open(self.root / "postgres.log", "wb")  # noqa: SIM115 -- the child keeps it
        argv = ["-D", str(data), "-k", str(self.root), "-h", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "postgres"), *argv, "-c", "max_connections=200"],
            stdout=log,
            stderr=subprocess.STDOUT,
            **self._as,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"postgres exited: {self.logs()[-2000:]}")
            try:
                self._connect().close()
                return self
            except Exception:  # not accepting connections yet
                time.sleep(0.1)
        raise ConfigError(f"postgres did not start within {timeout} s")

    def _connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True
        )

    def create_database(self, name: str) -> str:
        """A new database (name: lower-case letters, digits, underscores); returns its
        SQLAlchemy URL."""
        if not DB_NAME.match(name):
            raise ConfigError(f"database name {name!r}: use [a-z_][a-z0-9_]* (at most 63)")
        with contextlib.closing(self._connect()) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def logs(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then delete the folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
