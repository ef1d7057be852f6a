"""Every runtime module is the template's: ``copier update`` and the re-render rewrite it.

Ownership is decided per file, not by a list of runtime modules: a rendered file is the
owner's only if ``copier.yml`` lists it in ``_skip_if_exists`` (or the node adds it). So a
module split off or added to ``runtime/`` is template-owned as soon as the template renders
it; these tests fail if a runtime path ever becomes an owner file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from onex_scaffold import _rerender
from onex_scaffold._template import RUNTIME_DIR_IN_TEMPLATE, owner_files, template_root

from .conftest import NODE_TYPES, RenderedNode


def test_no_runtime_path_is_skipped_by_copier_update() -> None:
    skipped = owner_files("pkg")
    assert skipped, "copier.yml lists the owner's files in _skip_if_exists"
    assert not [path for path in skipped if path.startswith("pkg/runtime/")]


def test_every_template_runtime_module_is_rendered() -> None:
    """Unconditional runtime modules (no Jinja in the file name) reach every node."""
    folder = template_root() / RUNTIME_DIR_IN_TEMPLATE
    plain = sorted(p.name for p in folder.glob("*.py") if "{" not in p.name)
    # The modules the publisher and the node base were split into are among them.
    for name in ("producer.py", "event_records.py", "announcements.py", "identity.py"):
        assert name in plain
    assert len(plain) >= 25


@pytest.mark.parametrize("node_type", list(NODE_TYPES))
def test_rendered_runtime_modules_are_template_owned(
    node_type: str, rendered: dict[str, RenderedNode]
) -> None:
    project = rendered[node_type]
    runtime = project.path / project.package / "runtime"
    modules = {f"{project.package}/runtime/{p.name}" for p in runtime.glob("*.py")}
    folder = template_root() / RUNTIME_DIR_IN_TEMPLATE
    plain = {p.name for p in folder.glob("*.py") if "{" not in p.name}
    assert {f"{project.package}/runtime/{name}" for name in plain} <= modules
    # What the re-render keeps as the owner's when it renders this node again.
    owned = _rerender.owner_files(project.path, project.path, template_root())
    assert not modules & owned
    assert f"{project.package}/handlers.py" in owned  # the owner's file stays the owner's


def test_a_runtime_module_a_node_lacks_is_drift(
    tmp_path: Path, rendered: dict[str, RenderedNode]
) -> None:
    """The re-render check reports a missing runtime module (so nodes get new ones)."""
    project = rendered["effect"]
    node = tmp_path / "node"
    shutil.copytree(project.path, node)
    (node / project.package / "runtime" / "producer.py").unlink()
    found = _rerender.drift(node, project.path, template_root())
    assert found.missing == [f"{project.package}/runtime/producer.py"]
    assert not found.changed and not found.extra
