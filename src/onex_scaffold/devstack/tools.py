"""Finding the programs the stack needs, and the cache for what it downloads or builds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from onex_scaffold.devstack.errors import MissingToolError

RESOURCES = Path(__file__).with_name("resources")


def cache_dir(*parts: str) -> Path:
    """`$ONEX_CACHE_DIR` or `$XDG_CACHE_HOME/onex-node` or `~/.cache/onex-node`, plus parts."""
    base = os.environ.get("ONEX_CACHE_DIR")
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "onex-node"
    return root.joinpath(*parts)


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on a cache folder: one download/build at a time across projects."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def require(program: str, hint: str) -> str:
    """Absolute path of `program` on PATH, or MissingToolError with an install hint."""
    found = shutil.which(program)
    if found is None:
        raise MissingToolError(f"`{program}` not found on PATH: {hint}")
    return found


def java_binary(minimum: int = 17) -> str:
    """The java to run Kafka with: $JAVA_HOME/bin/java, else java on PATH; version >= minimum."""
    hint = "install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)"
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home, "bin", "java") if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else require("java", hint)
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as error:
        raise MissingToolError(f"`{java}` cannot run ({error}): {hint}") from error
    major = parse_java_major(out.stderr + out.stdout)
    if major is None:
        said = " ".join((out.stderr + out.stdout).split())[:200]
        raise MissingToolError(
            f"`{java} -version` names no version (it said: {said or 'nothing'}); "
            f"check JAVA_HOME and JAVA_TOOL_OPTIONS, or {hint}"
        )
    if major < minimum:
        raise MissingToolError(f"`{java}` is Java {major}; Kafka needs {hint}")
    return java


def parse_java_major(version_output: str) -> int | None:
    """Major version from `java -version` output ('1.8.0_x' -> 8, '17.0.15' -> 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    first = int(match.group(1))
    if first == 1 and match.group(2):
        return int(match.group(2))
    return first
