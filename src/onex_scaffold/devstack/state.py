"""Runtime state under `.onex-dev/`: what runs where (state.json), the env file, and the
folders `up` created (created.json, the only ones `down --purge` may delete)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

STATE_VERSION = 1

# The order of well-known variables in `.onex-dev/env`; others follow alphabetically.
ENV_ORDER = ("KAFKA_BOOTSTRAP_SERVERS", "CONSUL_HTTP_ADDR", "DATABASE_URL")


class ServiceRecord(BaseModel):
    """One service of the stack as `up` left it."""

    name: str
    kind: str = Field(description="what runs: apache-kafka, tansu, consul, postgres, external, ...")
    version: str | None = None
    pid: int | None = None
    start_ticks: int | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict, description="variables it provides")
    log: str | None = None
    external: bool = False
    cwd: str | None = Field(
        default=None,
        description="the folder it ran in; for our nodes the node's folder, kept on restart",
    )


class StackState(BaseModel):
    """Everything `down`, `status` and `restart` need to know about the running stack."""

    version: int = STATE_VERSION
    services: dict[str, ServiceRecord] = Field(default_factory=dict)


class StateStore:
    """Reads and writes `<root>/.onex-dev/state.json` and `<root>/.onex-dev/env`."""

    def __init__(self, dev_dir: Path) -> None:
        self.dev_dir = dev_dir
        self.state_path = dev_dir / "state.json"
        self.env_path = dev_dir / "env"

    def load(self) -> StackState:
        try:
            text = self.state_path.read_text()
        except FileNotFoundError:
            return StackState()
        return StackState.model_validate_json(text)

    def save(self, state: StackState) -> None:
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.state_path, state.model_dump_json(indent=2) + "\n")
        _atomic_write(self.env_path, render_env(state))

    def clear(self) -> None:
        for path in (self.state_path, self.env_path):
            path.unlink(missing_ok=True)


def merged_env(state: StackState) -> dict[str, str]:
    """All variables the services provide (later services win on a clash)."""
    env: dict[str, str] = {}
    for record in state.services.values():
        env.update(record.env)
    return env


def render_env(state: StackState) -> str:
    """Shell-sourceable KEY=value lines."""
    env = merged_env(state)
    keys = [k for k in ENV_ORDER if k in env] + sorted(k for k in env if k not in ENV_ORDER)
    lines = ["# written by `onex-node dev up`; source it: set -a; . .onex-dev/env; set +a"]
    lines += [f"{key}={shlex.quote(env[key])}" for key in keys]
    return "\n".join(lines) + "\n"


def parse_env(text: str) -> dict[str, str]:
    """Read KEY=value lines as written by `render_env`."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        parts = shlex.split(value) if value else [""]
        env[key.strip()] = parts[0] if parts else ""
    return env


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# Folders of ours outside `.onex-dev/` always live in the system temp dir with this prefix.
TEMP_PREFIX = "onex-dev-"


class CreatedFolders:
    """`.onex-dev/created.json`: every data folder `up` created, kept across `down`.

    `down --purge` deletes exactly these (and nothing a link points to): a folder must still be
    a real directory (not a symlink) owned by the user recorded at creation. Folders outside
    `.onex-dev/` must also sit directly in the system temp dir under our prefix.
    """

    def __init__(self, dev_dir: Path) -> None:
        self.dev_dir = dev_dir
        self.path = dev_dir / "created.json"

    def load(self) -> dict[str, int]:
        """Recorded folder -> owner uid."""
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): int(v) for k, v in data.items() if isinstance(v, int)}

    def add(self, folder: Path, uid: int) -> None:
        entries = self.load()
        entries[str(folder)] = uid
        self.dev_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path, json.dumps(entries, indent=2, sort_keys=True) + "\n")

    def owns(self, folder: Path, uid: int) -> bool:
        """True when `folder` is recorded for `uid` and is still that real, private directory."""
        return self.load().get(str(folder)) == uid and is_private_dir(folder, uid)

    def purge(self) -> list[str]:
        """Delete every recorded folder that is still ours; returns what was deleted."""
        removed: list[str] = []
        for name, uid in sorted(self.load().items()):
            folder = Path(name)
            if not self.allowed(folder) or not _is_real_dir_of(folder, uid):
                continue
            # rmtree never follows links inside the tree (fd-based on Linux).
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(name)
        self.path.unlink(missing_ok=True)
        return removed

    def allowed(self, folder: Path) -> bool:
        """Inside `.onex-dev/`, or a direct child of the temp dir carrying our prefix."""
        if folder.is_relative_to(self.dev_dir) and ".." not in folder.parts:
            return folder != self.dev_dir
        temp = Path(tempfile.gettempdir()).resolve()
        return folder.parent == temp and folder.name.startswith(TEMP_PREFIX)


def _is_real_dir_of(folder: Path, uid: int) -> bool:
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid


def is_private_dir(folder: Path, uid: int) -> bool:
    """A real directory (not a link) owned by `uid` that nobody else may enter (0700)."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    private = stat.S_IMODE(info.st_mode) & 0o077 == 0
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and private


def make_private_temp_dir(purpose: str) -> Path:
    """A new folder in the system temp dir: unpredictable name, mode 0700, created atomically."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{purpose}-")).resolve()
