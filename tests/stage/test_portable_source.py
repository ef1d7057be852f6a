"""Nodes from the bundled template record the published template, so a plain `copier update`
works from any clone on any machine (not only where the node was generated)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import git, run_python

from onex_scaffold import __version__, generate_node
from onex_scaffold._git import GIT_ENV
from onex_scaffold._template import TEMPLATE_URL_ENV, copy_template

RELEASE_NOTE = "Template 0.2.0: a note only the published release has."


def _publish(tmp_path: Path) -> Path:
    """A bare repository standing in for the published URL: the template tagged with this
    package's version, then a later release 0.2.0."""
    work = copy_template(tmp_path / "template-work")
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", f"template {__version__}")
    git(work, "tag", __version__)
    readme = work / "template" / "README.md.jinja"
    readme.write_text(readme.read_text() + f"\n{RELEASE_NOTE}\n")
    git(work, "commit", "-q", "-am", "template 0.2.0")
    git(work, "tag", "0.2.0")
    published = tmp_path / "published.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(published))
    return published


def test_plain_copier_update_works_from_a_second_clone(
    parsed_data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{_publish(tmp_path)}"
    monkeypatch.setenv(TEMPLATE_URL_ENV, url)
    monkeypatch.setenv("ONEX_SCAFFOLD_CACHE", str(tmp_path / "first-machine-cache"))
    node = tmp_path / "writer"

    stage, _ = generate_node(parsed_data, node)  # the bundled template, via the cache

    assert stage.status == "completed", stage.error
    answers = yaml.safe_load((node / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == url
    assert answers["_commit"] == __version__
    git(node, "init", "-q", "-b", "main")
    git(node, "add", "-A")
    git(node, "commit", "-q", "-m", "generated")
    handlers = node / "postgres_writer" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\nOWNER_RULE = 42\n")
    git(node, "commit", "-q", "-am", "owner: business rule")

    # A teammate: another clone, another home, no cache, no setting of ours.
    clone = tmp_path / "teammate" / "writer"
    git(tmp_path, "clone", "-q", str(node), str(clone))
    home = tmp_path / "teammate-home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ONEX_", "XDG_", "GIT_CONFIG"))
    }
    env.update(GIT_ENV, HOME=str(home))
    done = run_python("-m", "copier", "update", "--trust", "--defaults", cwd=clone, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    updated = yaml.safe_load((clone / ".copier-answers.yml").read_text())
    assert updated["_commit"] == "0.2.0"
    assert updated["_src_path"] == url
    assert RELEASE_NOTE in (clone / "README.md").read_text()
    assert "OWNER_RULE = 42" in (clone / "postgres_writer" / "handlers.py").read_text()
    assert not (home / ".cache" / "onex-scaffold").exists()  # nothing of ours was needed
