"""Runtime state under `.onex-dev/`: what runs where (state.json) and the env file."""

from __future__ import annotations

import os
import shlex
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
