"""Scratch folders of the stage nodes, which a killed stage does not leave behind for good.

A stage works in a temporary folder that ``with`` removes, but a SIGKILL (the OOM killer, a
chaos test) skips that. So each folder's name carries the host and process that made it,
and the first scratch folder of a kind that a process makes sweeps away that kind's folders
of this host's processes that no longer run.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

__all__ = ["scratch_folder", "sweep_orphans"]

_SWEPT: set[str] = set()


def _prefix(kind: str) -> str:
    return f"onex-pipeline-{kind}-"


def scratch_folder(kind: str) -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for one piece of a stage's work (``with scratch_folder("val")``)."""
    prefix = _prefix(kind)
    if prefix not in _SWEPT:
        _SWEPT.add(prefix)
        sweep_orphans(kind)
    return tempfile.TemporaryDirectory(prefix=f"{prefix}{socket.gethostname()}.{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def sweep_orphans(kind: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove ``kind``'s scratch folders in ``root`` (the temp dir) that a process of this
    host made and that no longer runs; only folders of this user, never through a link.
    Returns what was removed."""
    prefix, host = _prefix(kind), socket.gethostname()
    removed = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{prefix}*"):
        maker, _, _random = path.name[len(prefix) :].rpartition("-")
        made_on, _, pid = maker.rpartition(".")
        if made_on != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
