"""Process ownership: start, recognise and stop real process groups (a shell and a sleep)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from onex_scaffold.cli.dev import register
from onex_scaffold.devstack import procs
from onex_scaffold.devstack.stack import Stack


def _wait_until_ready(log: Path) -> None:
    """Until the process printed ``ready`` on a line of its own (the start line quotes its
    argv, which holds the word too), so its signal handlers are in place."""
    deadline = time.monotonic() + 10
    while "\nready\n" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # A parent that forks a child, like PostgreSQL does: both must go.
    info = procs.spawn(
        ["bash", "-c", "sleep 300 & wait"], tmp_path / "log", dict(os.environ), tmp_path
    )
    assert procs.is_running(info)

    deadline = time.monotonic() + 5
    while len(procs.group_members(info.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(procs.group_members(info.pid)) == 2
    assert procs.stop(info, signal.SIGTERM, grace_s=5) is True
    assert not procs.is_running(info)
    assert procs.group_members(info.pid) == []
    assert "start: bash -c" in (tmp_path / "log").read_text()
    # Stopping again is a no-op.
    assert procs.stop(info) is False


def test_stop_lets_a_draining_leader_finish_what_its_children_are_doing(tmp_path: Path) -> None:
    # A node stopping gracefully while git runs under Copier: the git must not die under it.
    leader = (
        "import signal, subprocess, sys\n"
        "child = subprocess.Popen(['sh', '-c', 'sleep 1; echo finished > child.out'])\n"
        "signal.signal(signal.SIGTERM, lambda *_: None)\n"
        "print('ready', flush=True)\n"
        "sys.exit(child.wait())\n"
    )
    info = procs.spawn([sys.executable, "-c", leader], tmp_path / "log", dict(os.environ), tmp_path)
    _wait_until_ready(tmp_path / "log")
    assert procs.stop(info, signal.SIGTERM, grace_s=10) is True
    assert (tmp_path / "child.out").read_text() == "finished\n"
    assert procs.group_members(info.pid) == []


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    info = procs.spawn(["sleep", "300"], tmp_path / "log", dict(os.environ), tmp_path)
    try:
        impostor = procs.ProcessInfo(pid=info.pid, start_ticks=info.start_ticks + 1)
        assert not procs.is_running(impostor)
        # A live process with another start time is never signalled.
        assert procs.stop(impostor, grace_s=0.5) is False
        assert procs.is_running(info)
    finally:
        procs.stop(info, grace_s=5)
    assert not procs.is_running(info)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    info = procs.spawn(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"],
        tmp_path / "log", dict(os.environ), tmp_path,
    )  # fmt: skip
    _wait_until_ready(tmp_path / "log")
    assert procs.stop(info, signal.SIGTERM, grace_s=0.5) is True
    assert not procs.is_running(info)


def test_status_and_down_of_an_empty_folder(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    assert stack.status() == []
    assert stack.down() == []
    assert stack.env() == {}


def test_cli_status_without_a_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dev", "--root", str(tmp_path), "status"])
    assert args.func(args) == 1
    assert "nothing started" in capsys.readouterr().out


def test_cli_member_commands_reject_unknown_members(tmp_path: Path) -> None:
    import argparse

    from onex_scaffold.devstack.errors import UnknownServiceError

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for action in ("restart", "stop", "start"):
        args = parser.parse_args(["dev", "--root", str(tmp_path), action, "zookeeper"])
        with pytest.raises(UnknownServiceError, match="no member 'zookeeper'") as raised:
            args.func(args)
        assert raised.value.exit_code == 2
