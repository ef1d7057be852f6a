"""The dev stack's folders cannot be hijacked by another local user (no services needed).

The attack: another user plants a symlink where `up` puts the PostgreSQL cluster (the system temp
dir, or `.onex-dev/postgres` after the temp folder was cleaned away) pointing at a folder of
someone else. `up` must never chown or use it, `down --purge` must never delete it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import stat
import tempfile
from pathlib import Path

import pytest

from onex_scaffold.devstack.postgres import PostgresService
from onex_scaffold.devstack.stack import Stack
from onex_scaffold.devstack.state import TEMP_PREFIX, CreatedFolders


def _victim(tmp_path: Path) -> tuple[Path, os.stat_result]:
    """A folder that belongs to somebody else, with a file in it."""
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (victim / "precious.txt").write_text("keep me\n")
    return victim, os.lstat(victim)


def _assert_untouched(victim: Path, before: os.stat_result) -> None:
    after = os.lstat(victim)
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert stat.S_IMODE(after.st_mode) == stat.S_IMODE(before.st_mode)
    assert (victim / "precious.txt").read_text() == "keep me\n"


def _service_as_root() -> PostgresService:
    if os.geteuid() != 0:
        pytest.skip("the temp-dir placement happens when running as root")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no `postgres` system user (PostgreSQL not installed)")
    service = PostgresService()
    service._user = "postgres"
    return service


def _private_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project folder only its owner may enter (the postgres user cannot, so the cluster
    goes to the temp dir), and its empty `.onex-dev`."""
    project = tmp_path / "project"
    project.mkdir(mode=0o700)
    dev_dir = project / ".onex-dev"
    dev_dir.mkdir()
    return project, dev_dir


def test_postgres_folder_is_private_unpredictable_and_ignores_a_planted_link(
    tmp_path: Path,
) -> None:
    service = _service_as_root()
    project, dev_dir = _private_project(tmp_path)
    victim, before = _victim(tmp_path)
    # The name the stack used to choose: sha256 of the folder. Plant it first.
    digest = hashlib.sha256(str(dev_dir).encode()).hexdigest()[:12]
    planted = Path(tempfile.gettempdir()) / f"onex-dev-postgres-{digest}"
    planted.unlink(missing_ok=True)
    planted.symlink_to(victim, target_is_directory=True)
    try:
        home = service._home(dev_dir)
    finally:
        planted.unlink()
    try:
        postgres_uid = pwd.getpwnam("postgres").pw_uid
        info = os.lstat(home)
        assert stat.S_ISDIR(info.st_mode) and info.st_uid == postgres_uid
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert home.name.startswith(f"{TEMP_PREFIX}postgres-") and home != planted
        assert Path(os.readlink(dev_dir / "postgres")) == home
        _assert_untouched(victim, before)
        # Up again: the recorded private folder is reused.
        assert service._home(dev_dir) == home
    finally:
        Stack(project).down(purge=True)
    assert not home.exists() and not (dev_dir / "postgres").is_symlink()
    _assert_untouched(victim, before)


def test_a_link_swapped_into_onex_dev_is_dropped_not_followed(tmp_path: Path) -> None:
    service = _service_as_root()
    project, dev_dir = _private_project(tmp_path)
    victim, before = _victim(tmp_path)
    # Our temp folder was cleaned away and the link now leads to someone else's folder.
    (dev_dir / "postgres").symlink_to(victim, target_is_directory=True)
    home = service._home(dev_dir)
    try:
        assert home != victim and home.name.startswith(f"{TEMP_PREFIX}postgres-")
        _assert_untouched(victim, before)
    finally:
        Stack(project).down(purge=True)
    _assert_untouched(victim, before)
    assert not home.exists()


def test_recorded_folder_replaced_by_a_link_is_not_reused(tmp_path: Path) -> None:
    service = _service_as_root()
    project, dev_dir = _private_project(tmp_path)
    home = service._home(dev_dir)
    victim, before = _victim(tmp_path)
    # Someone deletes our folder and puts a link with the same (now known) name in its place.
    home.rmdir()
    home.symlink_to(victim, target_is_directory=True)
    try:
        again = service._home(dev_dir)
        assert again != home
        _assert_untouched(victim, before)
        Stack(project).down(purge=True)
        _assert_untouched(victim, before)
        assert home.is_symlink(), "the planted link itself is not ours either: left alone"
        assert not again.exists()
    finally:
        home.unlink(missing_ok=True)


def test_purge_removes_links_in_onex_dev_but_never_their_targets(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".onex-dev"
    dev_dir.mkdir()
    victim, before = _victim(tmp_path)
    for sub in ("kafka", "consul", "postgres"):
        (dev_dir / sub).symlink_to(victim, target_is_directory=True)
    # A forged record naming a folder outside .onex-dev and the temp prefix is ignored.
    CreatedFolders(dev_dir).add(victim, os.geteuid())
    (dev_dir / "keep.txt").write_text("not data\n")
    lines = Stack(tmp_path).down(purge=True)
    assert any("removed" in line for line in lines)
    _assert_untouched(victim, before)
    assert not any((dev_dir / sub).is_symlink() for sub in ("kafka", "consul", "postgres"))
    assert (dev_dir / "keep.txt").exists()


def test_purge_deletes_real_data_folders_of_onex_dev(tmp_path: Path) -> None:
    dev_dir = tmp_path / ".onex-dev"
    (dev_dir / "kafka" / "data").mkdir(parents=True)
    (dev_dir / "kafka" / "data" / "meta.properties").write_text("x\n")
    Stack(tmp_path).down(purge=True)
    assert not (dev_dir / "kafka").exists()
