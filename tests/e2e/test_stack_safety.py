"""The real stack stays on loopback and inside its own folders."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from onex_scaffold.devstack.stack import Stack, StackOptions
from onex_scaffold.devstack.testing import StackAddresses


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on `port` (IPv4 and IPv6)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, _, port_hex = fields[1].partition(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(_decode(address))
    return found


def _decode(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    address = ipaddress.IPv6Address(b"".join(words))
    # Java listens on IPv6 sockets bound to an IPv4-mapped address (::ffff:127.0.0.1).
    return str(address.ipv4_mapped or address)


def test_every_port_of_the_stack_listens_on_loopback_only(stack: StackAddresses) -> None:
    state_path = stack.root / ".onex-dev" / "state.json"
    if not state_path.is_file():
        pytest.skip(f"the stack was not started by `onex-node dev up` in {stack.root}")
    state = json.loads(state_path.read_text())
    checked = 0
    for name, record in state["services"].items():
        if record.get("external"):
            continue
        for purpose, port in record["ports"].items():
            addresses = listening_addresses(port)
            if not addresses:
                continue  # e.g. a Kafka controller port of another broker role
            checked += 1
            assert addresses <= {"127.0.0.1", "::1"}, f"{name} {purpose} listens on {addresses}"
    registry = [r for r in state["services"].values() if r["kind"] == "onex-registry"]
    for record in registry:
        assert listening_addresses(record["ports"]["http"]) == {"127.0.0.1"}
    assert checked >= 2


def test_up_and_purge_never_touch_a_folder_behind_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (victim / "precious.txt").write_text("keep me\n")
    before = os.lstat(victim)
    project = tmp_path / "project"
    project.mkdir(mode=0o700)
    dev_dir = project / ".onex-dev"
    # The folder name the stack once derived from the project path, planted beforehand.
    digest = hashlib.sha256(str(dev_dir).encode()).hexdigest()[:12]
    planted = Path(tempfile.gettempdir()) / f"onex-dev-postgres-{digest}"
    planted.unlink(missing_ok=True)
    planted.symlink_to(victim, target_is_directory=True)
    stack = Stack(project)
    try:
        env = stack.up(
            StackOptions(kafka="tansu", postgres=True, registry=False, use_environment=False)
        )
        assert "DATABASE_URL" in env
        assert all(item.answering for item in stack.status())
        link = dev_dir / "postgres"
        home = Path(os.readlink(link)) if link.is_symlink() else link
        assert home != planted and stat.S_IMODE(os.lstat(home).st_mode) == 0o700
    finally:
        stack.down(purge=True)
        planted.unlink()
    after = os.lstat(victim)
    assert (after.st_uid, stat.S_IMODE(after.st_mode)) == (
        before.st_uid,
        stat.S_IMODE(before.st_mode),
    )
    assert sorted(p.name for p in victim.iterdir()) == ["precious.txt"]
    assert not home.exists(), "purge removes the folder up created"
