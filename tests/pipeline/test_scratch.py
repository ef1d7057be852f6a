"""Scratch folders of a SIGKILLed stage are swept away by the next stage process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from onex_scaffold.pipeline import scratch


def _folder_of(root: Path, pid: int, host: str | None = None, kind: str = "val") -> Path:
    folder = root / f"onex-pipeline-{kind}-{host or socket.gethostname()}.{pid}-abc_123"
    (folder / "node").mkdir(parents=True)
    (folder / "node" / "handlers.py").write_text("x = 1\n")
    return folder


def test_only_folders_of_dead_processes_of_this_host_are_swept(tmp_path: Path) -> None:
    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    orphan = _folder_of(tmp_path, killed.pid)
    mine = _folder_of(tmp_path, os.getpid())
    elsewhere = _folder_of(tmp_path, killed.pid, host="another-host")
    other_kind = _folder_of(tmp_path, killed.pid, kind="gen")
    unnamed = tmp_path / "onex-pipeline-val-pzg0ty2h"  # the old naming: left alone
    unnamed.mkdir()
    link = tmp_path / f"onex-pipeline-val-{socket.gethostname()}.{killed.pid}-link"
    link.symlink_to(mine)

    assert scratch.sweep_orphans("val", tmp_path) == [orphan]
    assert not orphan.exists()
    for kept in (mine, elsewhere, other_kind, unnamed, link):
        assert kept.exists()


def test_a_scratch_folder_is_named_for_its_process_and_removed_after_use() -> None:
    with scratch.scratch_folder("val") as folder:
        name = Path(folder).name
        assert name.startswith(f"onex-pipeline-val-{socket.gethostname()}.{os.getpid()}-")
        assert Path(folder).is_dir()
    assert not Path(folder).exists()
