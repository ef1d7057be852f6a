"""`down`: stop exactly the processes `up` started, and with `--purge` delete their data."""

from __future__ import annotations

import shutil
from pathlib import Path

from onex_scaffold.devstack import procs
from onex_scaffold.devstack.runner import StackRunner, process_of
from onex_scaffold.devstack.state import CreatedFolders

# Data folders of the services inside .onex-dev (what `down --purge` deletes there).
DATA_FOLDERS = ("kafka", "consul", "postgres")


def tear_down(runner: StackRunner, purge: bool = False) -> list[str]:
    """Stop exactly the processes `up` started; returns one line per member."""
    lines: list[str] = []
    with runner.locked():
        state = runner.store.load()
        factory = runner.factory(state)
        for name in sorted(state.services, key=runner.order_key, reverse=True):
            record = state.services[name]
            info = process_of(record)
            if info is None:
                lines.append(f"{name}: external ({record.env}), left running")
                continue
            if procs.stop(info, runner.stop_signal(factory, name, record)):
                lines.append(f"{name}: stopped (pid {record.pid})")
            else:
                lines.append(f"{name}: was not running")
        runner.store.clear()
        if purge:
            lines.append(purge_data(runner.dev_dir))
    return lines


def purge_data(dev_dir: Path) -> str:
    """Delete the data `up` created: recorded folders, and the data folders in .onex-dev.

    Links are removed, never followed: the PostgreSQL cluster may live in a private temp
    folder that .onex-dev/postgres links to, and that folder is deleted only because
    created.json records it (and it is still a real folder of the recorded owner).
    """
    removed = CreatedFolders(dev_dir).purge()
    for sub in DATA_FOLDERS:
        path = dev_dir / sub
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    outside = [p for p in removed if not Path(p).is_relative_to(dev_dir)]
    return f"removed the Kafka, Consul and PostgreSQL data under {dev_dir}" + (
        f" and {', '.join(outside)}" if outside else ""
    )
