"""Our nodes under nodes/ are what our template renders today: no drift in template-owned files.

A node's own logic lives only in owner files (the template's ``_skip_if_exists`` files, the
modules it adds to its package, the dependency lines below the marker in pyproject.toml).
Everything else must be byte-for-byte what the committed template renders from the committed
answers. When the template changes, re-render with ``nox -s rerender`` (the same code as this
test: ``onex_scaffold._rerender``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT

from onex_scaffold import _rerender
from onex_scaffold._files import SKIPPED_DIRS
from onex_scaffold._template import DEFAULT_TEMPLATE_URL, published_source

REGISTRY = REPO_ROOT / "nodes" / "registry"
#: Modules the registry adds to its package: owner-owned, never rendered by the template.
OWNER_MODULES = (
    "admission.py",
    "consul_registry.py",
    "discovery.py",
    "discovery_records.py",
    "host_resolver.py",
    "omnibase.py",
    "reannounce.py",
    "reconcile.py",
    "record_decoding.py",
    "registry_view.py",
    "service.py",
    "topic_setup.py",
)
NODES = _rerender.node_folders(REPO_ROOT)


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    with _rerender.committed_template(REPO_ROOT) as committed:
        yield committed


@pytest.fixture(scope="module")
def rendered_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onex-rendered-") as tmp:
        yield Path(tmp)


def _rendered(node: Path, template: Path, rendered_dir: Path) -> Path:
    target = rendered_dir / node.name
    if not target.exists():
        _rerender.render_fresh(node, template, target)
    return target


def test_every_node_is_found() -> None:
    assert REGISTRY in NODES


def test_answers_are_the_registry_s() -> None:
    given = _rerender.answers(REGISTRY)
    assert given["node_type"] == "effect"
    assert given["service_name"] == "onex-registry"
    assert given["node_name"] == "Registry"
    assert given["domain"] == "discovery"


@pytest.mark.parametrize("node", NODES, ids=[node.name for node in NODES])
def test_no_drift_in_template_owned_files(node: Path, template: Path, rendered_dir: Path) -> None:
    rendered = _rendered(node, template, rendered_dir)
    drift = _rerender.drift(node, rendered, template)
    hint = (
        f"re-render nodes/{node.name} with `nox -s rerender` instead of editing "
        "template-owned files"
    )
    assert not drift.missing, (
        f"files the template renders but nodes/{node.name} lacks: {drift.missing}; {hint}"
    )
    assert not drift.extra, (
        f"files in nodes/{node.name} the template does not render: {drift.extra}; {hint}"
    )
    assert not drift.changed, (
        f"template-owned files that differ from the template: {drift.changed}; {hint}"
    )


def test_owner_logic_stays_in_owner_files(template: Path, rendered_dir: Path) -> None:
    rendered = _rendered(REGISTRY, template, rendered_dir)
    # The template's handlers.py is only a starting point; ours must be the registry's.
    handlers = (REGISTRY / "onex_registry" / "handlers.py").read_text()
    assert "RegistryService" in handlers
    owned = _rerender.owner_files(REGISTRY, rendered, template)
    for module in OWNER_MODULES:
        assert (REGISTRY / "onex_registry" / module).is_file()
        assert not (rendered / "onex_registry" / module).exists()
        assert f"onex_registry/{module}" in owned
    assert "onex_registry/handlers.py" in owned and "tests/test_handlers.py" in owned


def test_rerender_keeps_owner_files_and_dependency_lines(template: Path, tmp_path: Path) -> None:
    node = tmp_path / "nodes" / "registry"
    shutil.copytree(REGISTRY, node, ignore=shutil.ignore_patterns(*SKIPPED_DIRS))
    pyproject = node / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            "# Your own dependencies go below this line.\n",
            '# Your own dependencies go below this line.\n    "owner-only-dep>=1",\n',
        )
    )
    (node / "start_node.py").write_text("# edited by hand\n")
    before = {rel: p.read_bytes() for rel, p in _rerender.files(node).items()}

    _rerender.rerender(node, template)

    after = _rerender.files(node)
    assert (node / "start_node.py").read_text() != "# edited by hand\n"
    assert '"owner-only-dep>=1"' in pyproject.read_text()
    for rel in ("onex_registry/handlers.py", *(f"onex_registry/{m}" for m in OWNER_MODULES)):
        assert after[rel].read_bytes() == before[rel], rel
    answers = yaml.safe_load((node / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == published_source()  # not the clone it was rendered from


@pytest.mark.parametrize("node", NODES, ids=[node.name for node in NODES])
def test_our_nodes_record_a_portable_source(node: Path) -> None:
    # Recorded by `nox -s rerender`: the published URL, never a path of one machine.
    answers = yaml.safe_load((node / ".copier-answers.yml").read_text())
    assert answers["_src_path"] == DEFAULT_TEMPLATE_URL
