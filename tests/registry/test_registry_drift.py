"""nodes/registry is what our template renders today: no drift in template-owned files.

The registry's own logic lives only in owner files (``handlers.py``, ``tests/test_handlers.py``,
the modules it adds beside them, the dependency lines below the marker in pyproject.toml).
Everything else must be byte-for-byte what the committed template renders from the committed
answers. When the template changes, re-render the registry with

    python tests/registry/test_registry_drift.py --write

which renders the committed template over nodes/registry (owner files are kept) and puts
the owner's dependency lines back into pyproject.toml.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from onex_scaffold.render import render_node

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "nodes" / "registry"
#: Modules the registry adds to its package: owner-owned, never rendered by the template.
OWNER_MODULES = (
    "admission.py",
    "consul_registry.py",
    "discovery.py",
    "omnibase.py",
    "reconcile.py",
    "service.py",
)
IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
OWN_DEPENDENCIES = re.compile(
    r"(# Your own dependencies go below this line\.\n)(?:.*\n)*?(?=\])", re.MULTILINE
)


def answers() -> dict[str, object]:
    loaded = yaml.safe_load((REGISTRY / ".copier-answers.yml").read_text())
    return {k: v for k, v in loaded.items() if not k.startswith("_")}


def owner_files(package: str) -> set[str]:
    copier_yml = yaml.safe_load((REPO / "copier.yml").read_text())
    skipped = {
        p.replace("{{ package_name }}", package) for p in copier_yml.get("_skip_if_exists", [])
    }
    return skipped | {f"{package}/{name}" for name in OWNER_MODULES}


def files(root: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and not IGNORED_PARTS & set(p.relative_to(root).parts)
    }


def normalise(relative: str, text: str) -> str:
    if relative == ".copier-answers.yml":
        return "\n".join(
            line for line in text.splitlines() if not line.startswith(("_commit:", "_src_path:"))
        )
    if relative == "pyproject.toml":
        return OWN_DEPENDENCIES.sub(r"\1", text)
    return text


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("registry") / "registry"
    with committed_template() as template:
        render_node(target, answers(), template=template, vcs_ref="HEAD")
    return target


@contextmanager
def committed_template() -> Iterator[Path]:
    """The template as committed (a clone of HEAD), so others' uncommitted template work in a
    shared checkout neither fails the comparison nor leaks into nodes/registry."""
    if not (REPO / ".git").exists():
        yield REPO
        return
    with tempfile.TemporaryDirectory(prefix="onex-template-") as tmp:
        clone = Path(tmp) / "template"
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)],
            check=True,
            capture_output=True,
        )
        yield clone


def rerender() -> None:
    """Render nodes/registry again from the committed template; owner files are kept."""
    pyproject = REGISTRY / "pyproject.toml"
    match = OWN_DEPENDENCIES.search(pyproject.read_text())
    own = match.group(0) if match else None
    answers_file = REGISTRY / ".copier-answers.yml"
    src_line = next(
        (line for line in answers_file.read_text().splitlines() if line.startswith("_src_path:")),
        None,
    )
    with committed_template() as template:
        render_node(REGISTRY, answers(), template=template, vcs_ref="HEAD", overwrite=True)
    if src_line is not None:
        # Keep pointing at the template repository, not at the temporary clone.
        text = answers_file.read_text()
        answers_file.write_text(re.sub(r"(?m)^_src_path:.*$", lambda _: src_line, text))
    if own is not None:
        text = pyproject.read_text()
        pyproject.write_text(OWN_DEPENDENCIES.sub(lambda _: own, text, count=1))


def test_answers_are_the_registry_s() -> None:
    given = answers()
    assert given["node_type"] == "effect"
    assert given["service_name"] == "onex-registry"
    assert given["node_name"] == "Registry"
    assert given["domain"] == "discovery"


def test_no_drift_in_template_owned_files(rendered: Path) -> None:
    package = "onex_registry"
    owned_by_owner = owner_files(package)
    ours, theirs = files(REGISTRY), files(rendered)
    missing = sorted(set(theirs) - set(ours) - owned_by_owner)
    extra = sorted(set(ours) - set(theirs) - owned_by_owner)
    changed = sorted(
        rel
        for rel in set(ours) & set(theirs)
        if rel not in owned_by_owner
        and normalise(rel, ours[rel].read_text()) != normalise(rel, theirs[rel].read_text())
    )
    hint = (
        "re-render nodes/registry from the template with its answers (README, 'Registry and "
        "Consul') instead of editing template-owned files"
    )
    assert not missing, f"files the template renders but nodes/registry lacks: {missing}; {hint}"
    assert not extra, f"files in nodes/registry the template does not render: {extra}; {hint}"
    assert not changed, f"template-owned files that differ from the template: {changed}; {hint}"


def test_owner_logic_stays_in_owner_files(rendered: Path) -> None:
    # The template's handlers.py is only a starting point; ours must be the registry's.
    handlers = (REGISTRY / "onex_registry" / "handlers.py").read_text()
    assert "RegistryService" in handlers
    for module in OWNER_MODULES:
        assert (REGISTRY / "onex_registry" / module).is_file()
        assert not (rendered / "onex_registry" / module).exists()


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/registry/test_registry_drift.py --write")
    rerender()
    print(f"re-rendered {REGISTRY}")
