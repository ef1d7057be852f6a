"""A hostile description (PRD free text) comes out inert in every generated file."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
import yaml

from onex_scaffold import RenderedNode, read_answers, render_node

from .conftest import project_env, run
from .test_text_filters import text

# Jinja that would print "evil-1337" if anything re-rendered the value.
HOSTILE = (
    'Writes "orders" to \'PostgreSQL\' \\ with """triple""" and \'\'\' quotes.\n'
    "evil-{{ 7 * 191 }} {% if true %}evil-block{% endif %} {# c #} ${HOME} $(id)\n"
    "# heading?\n---\n- list: item\nkey: [value] & *alias | > ! %\n"
    "[x](javascript:alert(1)) <b>html</b> `code` f'{x}' {0} \\N{BULLET}\n"
    "\u202e bidi \u2028 separator \x1b[31m escape \x00 nul"
)


@pytest.fixture(scope="module")
def hostile_nodes(
    copier_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, RenderedNode]:
    base = tmp_path_factory.mktemp("hostile")
    nodes = {}
    for kind in ("effect", "compute", "reducer", "orchestrator"):
        nodes[kind] = render_node(
            base / kind,
            {
                "node_type": kind,
                "node_name": "Hostile",
                "service_name": f"hostile-{kind}",
                "domain": "security",
                "description": HOSTILE,
            },
            template=copier_template,
        )
    return nodes


KINDS = ["effect", "compute", "reducer", "orchestrator"]


@pytest.mark.parametrize("kind", KINDS)
def test_not_rerendered(hostile_nodes: dict[str, RenderedNode], kind: str) -> None:
    node = hostile_nodes[kind]
    assert read_answers(node.path)["description"] == HOSTILE
    for path in node.path.rglob("*"):
        if path.is_file():
            content = path.read_text(encoding="utf-8")
            assert "evil-1337" not in content, f"{path} re-rendered the description"


@pytest.mark.parametrize("kind", KINDS)
def test_structured_files_round_trip(hostile_nodes: dict[str, RenderedNode], kind: str) -> None:
    node = hostile_nodes[kind]
    contract = yaml.safe_load((node.path / "contract.yaml").read_text(encoding="utf-8"))
    assert contract["description"] == text.clean(HOSTILE)
    pyproject = tomllib.loads((node.path / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["description"] == text.one_line(HOSTILE, 200)
    yaml.safe_load((node.path / "compose.node.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", KINDS)
def test_markdown_inert(hostile_nodes: dict[str, RenderedNode], kind: str) -> None:
    readme = (hostile_nodes[kind].path / "README.md").read_text(encoding="utf-8")
    assert text.md_text(HOSTILE) in readme
    headings = [line for line in readme.splitlines() if line.startswith("#")]
    assert all(not h.startswith("# heading") for h in headings)
    assert "<b>" not in readme and "](javascript" not in readme


@pytest.mark.parametrize("kind", KINDS)
def test_python_still_compiles_and_lints(hostile_nodes: dict[str, RenderedNode], kind: str) -> None:
    node = hostile_nodes[kind]
    carriers: list[str] = []
    for path in sorted(node.path.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for item in ast.walk(tree):
            if isinstance(item, ast.Constant) and item.value == text.clean(HOSTILE):
                carriers.append(str(path.relative_to(node.path)))
    # The description reaches the code (introspection) as an exact, inert literal.
    assert carriers, "no Python string literal carries the description verbatim"
    # The files carrying it stay lint- and format-clean (the whole project is
    # checked in test_generated_project).
    env = project_env()
    run(["ruff", "check", "--no-cache", *carriers], node.path, env)
    run(["ruff", "format", "--check", "--no-cache", *carriers], node.path, env)


@pytest.mark.slow
def test_wheel_metadata_accepts_it(hostile_nodes: dict[str, RenderedNode], tmp_path: Path) -> None:
    node = hostile_nodes["effect"]
    run(
        ["python", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
         str(tmp_path), str(node.path)],
        tmp_path,
        project_env(),
    )  # fmt: skip
    assert list(tmp_path.glob("*.whl"))
