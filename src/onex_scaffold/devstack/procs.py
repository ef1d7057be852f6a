"""Start, recognise and stop the processes of the stack.

Every service runs as the leader of its own process group, so stopping it also stops the
children it forked (PostgreSQL backends, for example). A process is only ever signalled after
checking that the PID still belongs to the process we started: /proc/PID/stat's start time must
match the one recorded at launch, so a recycled PID is never touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Popen objects of children started by this Python process. Kept so they are reaped (no
# zombies) and never garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessInfo:
    """What identifies a started process: PID (= process group) and kernel start time."""

    pid: int
    start_ticks: int


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start_ticks) of a process, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def is_running(info: ProcessInfo) -> bool:
    """True when the recorded process is alive (not a zombie) and is still the same process."""
    _reap(info.pid)
    stat = _read_stat(info.pid)
    if stat is None:
        return False
    state, _pgid, start_ticks = stat
    return state != "Z" and start_ticks == info.start_ticks


def recorded_alive(pid: int | None, start_ticks: int | None) -> bool:
    """`is_running` for a recorded pid and start time, either of which may be missing."""
    if pid is None or start_ticks is None:
        return False
    return is_running(ProcessInfo(pid=pid, start_ticks=start_ticks))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs whose process group is `pgid`."""
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            members.append(int(entry.name))
    return members


def spawn(
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
    user: str | None = None,
) -> ProcessInfo:
    """Start `argv` detached in a new session, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
            user=user,
        )
    _CHILDREN[child.pid] = child
    stat = _read_stat(child.pid)
    # A process that died instantly still gets recorded; is_running() reports it dead.
    return ProcessInfo(pid=child.pid, start_ticks=stat[2] if stat else -1)


def stop(info: ProcessInfo, sig: signal.Signals = signal.SIGTERM, grace_s: float = 20.0) -> bool:
    """Stop the process of `info` and its process group; SIGKILL after `grace_s`.

    `sig` goes to the leader alone, the way ``docker stop`` stops a container: a node that is
    draining lets the tools it runs (git under Copier, a validator's pytest) finish the work
    in flight instead of seeing them die under it. Members still there once the leader has
    exited are orphans nobody will stop, so they get `sig` then.

    Only acts when the leader is still our process, or when the leader is gone but members of
    its group remain (a process group ID cannot be reused while the group has members, so those
    are the leader's own children).
    """
    leader_alive = is_running(info)
    if not leader_alive:
        stat = _read_stat(info.pid)
        if stat is not None and stat[2] != info.start_ticks:
            # The PID now belongs to another process. The kernel only recycles a PID once no
            # process group uses it, so nothing of ours is left either.
            return False
        if not group_members(info.pid):
            return False
    try:
        if leader_alive:
            os.kill(info.pid, sig)
        else:
            os.killpg(info.pid, sig)
    except ProcessLookupError:
        return leader_alive
    orphans_signalled = not leader_alive
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(info.pid)
        if not is_running(info):
            if not group_members(info.pid):
                return leader_alive
            if not orphans_signalled:
                orphans_signalled = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(info.pid, sig)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (is_running(info) or group_members(info.pid)):
        _reap(info.pid)
        time.sleep(0.05)
    _reap(info.pid)
    return leader_alive


def tail(path: Path, lines: int = 15) -> str:
    """Last lines of a log file ('' when missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
