"""The bundled template is rendered from a small git snapshot, so nodes stay updatable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import git
from helpers.stage import tree_hashes

import onex_scaffold._template
from onex_scaffold._snapshot import SnapshotError, cache_dir, snapshot
from onex_scaffold._template import published_source
from onex_scaffold.stage import generate_node

MARK = "# bundled template changed\n"
NAMING = Path("template", "{{package_name}}", "runtime", "naming.py")


@pytest.fixture
def bundled(template_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plain-folder copy of the template standing in for the bundled one, and a fresh cache."""
    root = tmp_path / "bundled"
    shutil.copytree(template_repo, root, ignore=shutil.ignore_patterns(".git"))
    monkeypatch.setenv("ONEX_SCAFFOLD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onex_scaffold._template, "template_root", lambda: root)
    return root


def test_snapshot_commits_only_on_change(bundled: Path):
    repo, first = snapshot(bundled, "0.1.0")
    assert repo == cache_dir()
    assert snapshot(bundled, "0.1.0") == (repo, first)
    assert sorted(p.name for p in repo.iterdir()) == [
        ".git",
        "copier.yml",
        "extensions",
        "template",
    ]

    (bundled / NAMING).write_text((bundled / NAMING).read_text() + MARK)
    _, second = snapshot(bundled, "0.1.0")

    assert second != first
    assert git(repo, "describe", "--tags", first).strip() == "0.1.0"
    assert git(repo, "describe", "--tags", second).strip().startswith("0.1.0-1-g")
    assert (repo / NAMING).read_text().endswith(MARK)


def test_snapshot_refuses_a_folder_without_copier_yml(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ONEX_SCAFFOLD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotError, match=r"no copier\.yml"):
        snapshot(tmp_path / "empty", "0.1.0")


def test_default_template_nodes_update_by_merging(
    bundled: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    first, result = generate_node(parsed_data, out)
    assert first.status == "completed", first.error
    answers = yaml.safe_load((out / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == published_source()  # portable, not this machine's cache
    assert answers["_commit"] == "0.1.0"
    assert not first.warning_gates  # a clean snapshot: nothing to warn about
    before = tree_hashes(out)

    again, result = generate_node(parsed_data, out)
    assert again.status == "completed", again.error
    assert again.metadata["mode"] == "update"
    assert result["changed_files"] == []
    assert tree_hashes(out) == before

    # the owner edits their code, the bundled template changes (e.g. a package upgrade)
    handlers = out / "postgres_writer" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\nOWNER = True\n")
    (bundled / NAMING).write_text((bundled / NAMING).read_text() + MARK)

    third, result = generate_node(parsed_data, out)

    assert third.status == "completed", third.error
    assert third.metadata["mode"] == "update"  # a real 3-way merge, not a re-render
    assert result["template_version"].startswith("0.1.0-1-g")
    assert (out / "postgres_writer" / "runtime" / "naming.py").read_text().endswith(MARK)
    assert handlers.read_text().endswith("\nOWNER = True\n")


def test_lost_cache_falls_back_to_re_rendering(
    bundled: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    snapshot(bundled, "0.1.0")  # an earlier snapshot, so the node records 0.1.0-1-g<hash>
    (bundled / NAMING).write_text((bundled / NAMING).read_text() + MARK)
    out = tmp_path / "writer"
    first, result = generate_node(parsed_data, out)
    assert first.status == "completed", first.error
    assert result["template_version"].startswith("0.1.0-1-g")
    before = tree_hashes(out)
    shutil.rmtree(cache_dir())

    stage, result = generate_node(parsed_data, out)

    assert stage.status == "completed", stage.error
    assert stage.metadata["mode"] == "regenerate"
    assert result["changed_files"] == []
    assert tree_hashes(out) == before


def test_unusable_cache_still_generates(
    bundled: Path, parsed_data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("ONEX_SCAFFOLD_CACHE", str(blocker / "cache"))

    stage, result = generate_node(parsed_data, tmp_path / "writer")

    assert stage.status == "completed", stage.error
    gate = next(g for g in stage.validation_gates if g.name == "template_available")
    assert "ONEX_SCAFFOLD_CACHE" in (gate.message or "")
    assert Path(result["main_file"]).is_file()
    # Rendered from the plain folder: no commit, so the warning gate says later runs
    # re-render instead of merging.
    assert any(g.name == "template_source" for g in stage.warning_gates)


_SNAPSHOT_IN_A_PROCESS = """
import sys
from pathlib import Path
from onex_scaffold._snapshot import snapshot
print(snapshot(Path(sys.argv[1]), "0.1.0")[1])
"""


def test_concurrent_processes_share_one_snapshot(bundled: Path):
    """Several processes snapshotting a fresh cache at once: one commit, all agree."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _SNAPSHOT_IN_A_PROCESS, str(bundled)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    commits = {stdout.strip() for stdout, _stderr in outputs}
    assert len(commits) == 1
    assert git(cache_dir(), "rev-list", "--count", "HEAD").strip() == "1"
    # Packed: a clone of the cache copies one pack, not a folder per object.
    assert git(cache_dir(), "count-objects", "-v").splitlines()[0] == "count: 0"
