"""Re-render the nodes this repository keeps under ``nodes/`` from its own template.

Every folder under ``nodes/`` holding a ``.copier-answers.yml`` is a node made from the
template. Its template-owned files must be exactly what the committed template renders from
its committed answers; its owner files are its own:

* the template's ``_skip_if_exists`` files (``handlers.py``, ``tests/test_handlers.py``),
* ``PRD.md``, the PRD the node is generated from (``onex-node pipeline regenerate-self``),
* every file in the node's package that the template does not produce (``discovery.py`` ...),
* the dependency lines below the marker in ``pyproject.toml``.

The nodes record the published template (:func:`onex_scaffold._template.published_source`)
as ``_src_path``; the re-render passes the local checkout to Copier explicitly.

``python scripts/rerender_nodes.py`` (or ``nox -s rerender``) writes: it renders the
committed template over each node, keeping owner files and dependency lines. With
``--check`` it writes nothing and lists the drift (exit 1). ``tests/registry/
test_registry_drift.py`` runs the same comparison.

The template is rendered from a clone of the checkout's ``HEAD``, so uncommitted template
work in the checkout neither fails the comparison nor leaks into the nodes.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from onex_scaffold._answers import ANSWERS_FILE, read_answers, user_answers, write_src_path
from onex_scaffold._files import relative_files
from onex_scaffold._git import clone

#: The owner's dependency lines in a node's pyproject.toml: below this marker, up to ``]``.
OWN_DEPENDENCIES: Final = re.compile(
    r"(# Your own dependencies go below this line\.\n)(?:.*\n)*?(?=\])", re.MULTILINE
)
#: The PRD a node is generated from, kept beside it: the node's own, like its owner files.
PRD_FILE: Final = "PRD.md"
#: Answers-file lines that depend on where and from which commit the node was rendered.
_PROVENANCE_KEYS: Final = ("_commit:", "_src_path:")


@dataclass
class Drift:
    """How a node differs from what the template renders (empty lists: no drift)."""

    node: Path
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.changed)

    def lines(self) -> list[str]:
        found: list[str] = []
        for label, paths in (
            ("rendered by the template but missing", self.missing),
            ("not rendered by the template and not an owner file", self.extra),
            ("template-owned but different from the template", self.changed),
        ):
            found.extend(f"{self.node.name}: {path}: {label}" for path in paths)
        return found


def node_folders(root: Path) -> list[Path]:
    """Every node under ``root/nodes`` (a folder holding an answers file), sorted."""
    nodes = root / "nodes"
    if not nodes.is_dir():
        return []
    return sorted(p.parent for p in nodes.glob(f"*/{ANSWERS_FILE}") if p.is_file())


def answers(node: Path) -> dict[str, Any]:
    """The node's recorded answers, without Copier's own ``_`` keys."""
    return user_answers(read_answers(node))


def package_of(node: Path) -> str:
    from onex_scaffold._template import naming

    return naming().package_name(str(answers(node)["service_name"]))


@contextmanager
def committed_template(root: Path) -> Iterator[Path]:
    """The template as committed in ``root`` (a clone of ``HEAD``), or ``root`` itself
    when it is not a git checkout (an unpacked source archive)."""
    if not (root / ".git").exists():
        yield root
        return
    with tempfile.TemporaryDirectory(prefix="onex-template-") as tmp:
        checkout = Path(tmp) / "template"
        clone(root, checkout)
        yield checkout


def files(root: Path) -> dict[str, Path]:
    """Files under ``root`` by POSIX relative path, tool caches left out."""
    return {rel: root / rel for rel in relative_files(root)}


def owner_files(node: Path, rendered: Path, template: Path) -> set[str]:
    """The node's owner files: ``_skip_if_exists``, its ``PRD.md``, and the modules the
    node's package has and the template does not produce."""
    from onex_scaffold._template import owner_files as skipped_files

    package = package_of(node)
    skipped = skipped_files(package, template)
    rendered_files = files(rendered)
    added = {
        rel for rel in files(node) if rel.startswith(f"{package}/") and rel not in rendered_files
    }
    return skipped | added | ({PRD_FILE} if (node / PRD_FILE).is_file() else set())


def _normalise(relative: str, text: str) -> str:
    if relative == ANSWERS_FILE:
        return "\n".join(
            line for line in text.splitlines() if not line.startswith(_PROVENANCE_KEYS)
        )
    if relative == "pyproject.toml":
        return OWN_DEPENDENCIES.sub(r"\1", text)
    return text


def render_fresh(node: Path, template: Path, destination: Path) -> Path:
    """Render ``template`` at ``HEAD`` with ``node``'s answers into ``destination``."""
    from onex_scaffold._render import render_node

    render_node(destination, answers(node), template=template, vcs_ref="HEAD")
    return destination


def drift(node: Path, rendered: Path, template: Path) -> Drift:
    """Compare ``node`` with a fresh rendering of it (see :func:`render_fresh`)."""
    owned = owner_files(node, rendered, template)
    ours, theirs = files(node), files(rendered)
    result = Drift(node)
    result.missing = sorted(set(theirs) - set(ours) - owned)
    result.extra = sorted(set(ours) - set(theirs) - owned)
    result.changed = sorted(
        rel
        for rel in set(ours) & set(theirs)
        if rel not in owned
        and _normalise(rel, ours[rel].read_text(encoding="utf-8"))
        != _normalise(rel, theirs[rel].read_text(encoding="utf-8"))
    )
    return result


def rerender(node: Path, template: Path) -> None:
    """Render ``template`` over ``node``: template-owned files replaced, owner files and the
    owner's dependency lines kept. The node records the published template as its source
    (``_src_path``), not the local checkout it was rendered from, so a plain ``copier
    update`` of it works from any clone; ``_commit`` is the checkout's commit, which the
    published repository has once it is pushed."""
    from onex_scaffold._render import render_node
    from onex_scaffold._template import published_source

    pyproject = node / "pyproject.toml"
    match = OWN_DEPENDENCIES.search(pyproject.read_text(encoding="utf-8"))
    own = match.group(0) if match else None
    render_node(node, answers(node), template=template, vcs_ref="HEAD", overwrite=True)
    write_src_path(node, published_source())
    if own is not None:
        text = pyproject.read_text(encoding="utf-8")
        pyproject.write_text(OWN_DEPENDENCIES.sub(lambda _: own, text, count=1), encoding="utf-8")


def check_all(root: Path, nodes: Sequence[Path] | None = None) -> list[Drift]:
    """Drift of every node (or of ``nodes``) against the committed template."""
    results: list[Drift] = []
    with committed_template(root) as template, tempfile.TemporaryDirectory() as tmp:
        for node in nodes if nodes is not None else node_folders(root):
            rendered = render_fresh(node, template, Path(tmp) / node.name)
            results.append(drift(node, rendered, template))
    return results


def rerender_all(root: Path, nodes: Sequence[Path] | None = None) -> list[Path]:
    """Re-render every node (or ``nodes``) from the committed template; returns them."""
    done = list(nodes if nodes is not None else node_folders(root))
    with committed_template(root) as template:
        for node in done:
            rerender(node, template)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rerender_nodes",
        description="Re-render the nodes under nodes/ from the committed template "
        "(owner files and the owner's dependency lines are kept).",
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; list the drift and exit 1 if any"
    )
    parser.add_argument("node", nargs="*", help="node folder names under nodes/ (default: all)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    nodes = [root / "nodes" / name for name in args.node] or None
    if args.check:
        drifted = [d for d in check_all(root, nodes) if d]
        for item in drifted:
            for line in item.lines():
                print(line, file=sys.stderr)
        if drifted:
            print(
                "re-render with `nox -s rerender` (python scripts/rerender_nodes.py) instead of "
                "editing template-owned files",
                file=sys.stderr,
            )
            return 1
        print("no drift")
        return 0
    for node in rerender_all(root, nodes):
        print(f"re-rendered {node.relative_to(root)}")
    return 0
