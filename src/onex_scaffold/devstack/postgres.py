"""A throwaway PostgreSQL cluster from Debian's packages: initdb into .onex-dev/postgres,
loopback port, trust auth, database `onex`.

initdb and postgres refuse to run as root, so as root both run as the `postgres` system user
(created by Debian's package) and the cluster directory is owned by it.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.errors import MissingToolError, ServiceStartError
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.state import CreatedFolders, ServiceRecord, make_private_temp_dir

DATABASE_VAR = "DATABASE_URL"
DATABASE_NAME = "onex"
_INSTALL_HINT = "install PostgreSQL (Debian: apt-get install postgresql) or set PG_BIN_DIR"


def find_bin_dir() -> Path:
    """PG_BIN_DIR, else the newest /usr/lib/postgresql/*/bin, else the dir of initdb on PATH."""
    explicit = os.environ.get("PG_BIN_DIR")
    candidates: list[Path] = [Path(explicit)] if explicit else []
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(re.sub(r"\D", "", Path(p).parent.name) or 0),
        reverse=True,
    )
    candidates += [Path(p) for p in versions]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "postgres", "psql")):
            return candidate
    raise MissingToolError(f"PostgreSQL's initdb/postgres/psql not found: {_INSTALL_HINT}")


def psql_query(bin_dir: Path, url: str, sql: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Run one query with psql; (ok, output or error line)."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="2")
    try:
        out = subprocess.run(
            [str(bin_dir / "psql"), url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
            capture_output=True, text=True, timeout=timeout_s, env=env, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"psql timed out after {timeout_s:.0f} s"
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return False, lines[-1] if lines else f"psql exit {out.returncode}"
    return True, out.stdout.strip()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def _traversable_by(path: Path, uid: int, gid: int) -> bool:
    """Can user uid/gid reach `path` (execute permission on every parent)?"""
    for parent in [path, *path.parents]:
        info = parent.stat()
        if info.st_uid == uid:
            ok = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid == gid:
            ok = bool(info.st_mode & stat.S_IXGRP)
        else:
            ok = bool(info.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


class PostgresService(Service):
    """PostgreSQL server process run directly (not via pg_ctl) so `down` owns its PID."""

    name = "postgres"
    external_var = DATABASE_VAR
    start_timeout_s = 60.0
    # SIGINT = "fast" shutdown: disconnect clients, then exit (SIGTERM waits for them).
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self._bin: Path | None = None
        self._user: str | None = None
        self._version = "unknown"

    def external(self, environ: Mapping[str, str]) -> ServiceRecord | None:
        # psql is needed to probe an external database too; without it, start our own.
        try:
            self._bin = find_bin_dir()
        except MissingToolError:
            return None
        return super().external(environ)

    def prepare(self, ctx: StartContext) -> None:
        self._bin = find_bin_dir()
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as error:
                raise MissingToolError(
                    "running as root, PostgreSQL needs the `postgres` system user: " + _INSTALL_HINT
                ) from error
            self._user = "postgres"
        out = subprocess.run(
            [str(self._bin / "postgres"), "--version"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        match = re.search(r"\(PostgreSQL\) (\S+)", out.stdout)
        self._version = match.group(1) if match else "unknown"

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            account = pwd.getpwnam(self._user)
            os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)

    def _home(self, dev_dir: Path) -> Path:
        """The cluster folder: .onex-dev/postgres, owned by the user the server runs as.

        When that user cannot reach .onex-dev (a project under /root or a 0700 temp folder),
        the cluster lives in a private folder of the system temp dir (unpredictable name,
        0700, recorded in created.json) and .onex-dev/postgres links to it. A link is only
        followed to a folder `up` recorded and that is still a private directory of that user;
        anything else (a planted link, a folder someone replaced) is never chowned or reused.
        """
        created = CreatedFolders(dev_dir)
        link = dev_dir / "postgres"
        uid = os.geteuid() if self._user is None else pwd.getpwnam(self._user).pw_uid
        if link.is_symlink():
            target = Path(os.readlink(link))
            if target.is_absolute() and created.owns(target, uid):
                return target
            link.unlink()  # not ours, or no longer private: drop the link, never follow it
        if self._user is None or _traversable_by(dev_dir, uid, pwd.getpwnam(self._user).pw_gid):
            link.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._chown(link)  # a real folder inside .onex-dev (links were dropped above)
            created.add(link, uid)
            return link
        target = make_private_temp_dir("postgres")
        self._chown(target)  # created just now by us: no one else can have swapped it
        created.add(target, uid)
        link.symlink_to(target, target_is_directory=True)
        return target

    def plan(self, ctx: StartContext) -> LaunchPlan:
        assert self._bin is not None, "prepare() first"
        previous = ctx.previous.ports.get("postgres") if ctx.previous else None
        port = choose_port("postgres", self.port, previous, ctx.used_ports, "--postgres-port")
        ctx.used_ports.add(port)
        home = self._home(ctx.dev_dir)
        data = home / "data"
        if not (data / "PG_VERSION").is_file():
            self._initdb(ctx, home, data)
        url = f"postgresql://postgres@127.0.0.1:{port}/{DATABASE_NAME}"
        return LaunchPlan(
            argv=[
                str(self._bin / "postgres"), "-D", str(data), "-p", str(port),
                "-c", "listen_addresses=127.0.0.1",
                # TCP only: no Unix socket in a folder that may not exist or be writable.
                "-c", "unix_socket_directories=",
                # A throwaway development cluster: durability is not worth the disk waits.
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            ],
            ports={"postgres": port},
            provides={DATABASE_VAR: url},
            version=self._version,
            kind="postgres",
            cwd=home,
            user=self._user,
        )  # fmt: skip

    def _initdb(self, ctx: StartContext, home: Path, data: Path) -> None:
        assert self._bin is not None
        shutil.rmtree(data, ignore_errors=True)
        log_path = ctx.log_dir / "postgres-initdb.log"
        with log_path.open("w") as log:
            result = subprocess.run(
                [str(self._bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync"],
                cwd=home, user=self._user, stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise ServiceStartError(
                f"postgres: initdb failed (exit {result.returncode}); see {log_path}"
            )

    def probe(self, record: ServiceRecord) -> str | None:
        if self._bin is None:
            self._bin = find_bin_dir()
        ok, output = psql_query(self._bin, record.env[DATABASE_VAR], "SELECT 1")
        if not ok:
            return f"SELECT 1 failed: {output}"
        return None if output == "1" else f"SELECT 1 returned {output!r}"

    def wait_ready(
        self, record: ServiceRecord, alive: Callable[[], bool], timeout_s: float
    ) -> str | None:
        """Wait for the server on the maintenance database, create `onex`, then probe it."""
        if self._bin is None:
            self._bin = find_bin_dir()
        url = record.env[DATABASE_VAR]
        admin = with_database(url, "postgres")
        deadline = time.monotonic() + timeout_s
        reason = "not probed"
        while time.monotonic() < deadline:
            ok, output = psql_query(
                self._bin,
                admin,
                f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE_NAME}'",
            )
            if ok:
                if output == "0":
                    created, message = psql_query(
                        self._bin, admin, f"CREATE DATABASE {DATABASE_NAME}"
                    )
                    if not created:
                        return f"CREATE DATABASE {DATABASE_NAME} failed: {message}"
                return self.probe(record)
            reason = output
            if not alive():
                return f"the process exited ({reason})"
            time.sleep(0.2)
        return f"no answer within {timeout_s:g} s ({reason})"
