"""Hostile PRD values: refused with a clear error and nothing written, or rendered inert.

Inert means: the generated code compiles, and importing every module of the node in a
fresh interpreter runs nothing the text asked for - each payload would create a marker
file if it were ever executed (as Python, Jinja or YAML) and the marker must not exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.stage import leftovers_beside

from onex_scaffold.stage import generate_node

MARKER_NAME = "PWNED"


def payloads(marker: Path) -> dict[str, str]:
    m = str(marker)
    return {
        "double_quotes": f'"; open({m!r}, "w").close(); x = "',
        "single_quotes": f"'; open({m!r}, 'w').close(); x = '",
        "triple_double": f'"""\nopen({m!r}, "w").close()\n"""',
        "triple_single": f"'''\nopen({m!r}, 'w').close()\n'''",
        "newline_code": f"ok\nimport os; os.system('touch {m}')\n#",
        "backslash_end": "ends with a backslash \\",
        "jinja_expr": f"{{{{ cycler.__init__.__globals__.os.system('touch {m}') }}}}",
        "jinja_stmt": f"{{% set x = cycler.__init__.__globals__.os.system('touch {m}') %}}",
        "jinja_open": "{{ unclosed",
        "jinja_comment": "{# comment #} and {% raw %}",
        "yaml_specials": (
            f"key: value\n- item\n&anchor *anchor !!python/object/apply:os.system ['touch {m}']"
        ),
        "yaml_doc": "---\n...\n? complex\n| literal\n> folded\n# comment\n%YAML 1.2",
        "toml_specials": f'"""\n[tool.evil]\ncmd = "touch {m}"\n"""',
        "markdown_html": f"<script>touch {m}</script> [x](javascript:alert(1)) `code` ```",
        "path_like": "../../../../etc/passwd and C:\\Windows\\system32",
        "non_ascii": "Écrit des lignes — 漢字, emoji 🚀, RTL \u202ereversed\u202c, zero\u200bwidth",
        "line_separators": "a\u2028b\u2029c",
        "shell": f"$(touch {m}) `touch {m}` ; touch {m} && touch {m}",
        "fstring": f"{{__import__('os').system('touch {m}')}}",
        "long_text": "word " * 790,
        "crlf_tabs": "line1\r\nline2\tTabbed\r",
    }


def import_every_module(node: Path) -> subprocess.CompletedProcess[str]:
    """Import every .py of the node (package, start script, tests) in a fresh interpreter."""
    script = (
        "import importlib, pathlib, sys\n"
        "root = pathlib.Path.cwd()\n"
        "sys.path.insert(0, str(root))\n"
        "for path in sorted(root.rglob('*.py')):\n"
        "    rel = path.relative_to(root).with_suffix('')\n"
        "    name = '.'.join(rel.parts)\n"
        "    if rel.parts[0] == 'tests':\n"
        "        continue\n"
        "    importlib.import_module(name.removesuffix('.__init__'))\n"
        "print('imported')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=node,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(payloads(Path("x"))))
def test_free_text_is_rendered_inert(
    name: str, template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    marker = tmp_path / MARKER_NAME
    text = payloads(marker)[name]
    out = tmp_path / "node"
    data = {**parsed_data, "description": text, "features": ["inert " + name]}

    stage, result = generate_node(data, out, template=template_repo)

    assert stage.status == "completed", stage.error
    assert not marker.exists(), "rendering executed the payload"
    answers = yaml.safe_load((out / ".copier-answers.yml").read_text(encoding="utf-8"))
    assert answers["description"] == text  # kept exactly, not mangled
    for rel in result["generated_files"]:
        if rel.endswith(".py"):
            compile((out / rel).read_bytes(), rel, "exec")
    imported = import_every_module(out)
    assert imported.returncode == 0, imported.stderr
    assert "imported" in imported.stdout
    assert not marker.exists(), "importing the node executed the payload"
    # the structured files still parse, with the text as plain data
    yaml.safe_load((out / "compose.node.yaml").read_text(encoding="utf-8"))
    contract = yaml.safe_load((out / "contract.yaml").read_text(encoding="utf-8"))
    assert isinstance(contract, dict)


IDENTIFIER_ATTACKS: dict[str, tuple[str, Any]] = {
    "traversal": ("service_name", "../../outside"),
    "absolute": ("service_name", "/etc/cron.d/x"),
    "backslash": ("service_name", "..\\..\\outside"),
    "nul": ("service_name", "writer\x00.py"),
    "newline": ("service_name", "writer\nimport os"),
    "quote": ("service_name", 'writer"; import os; "'),
    "jinja": ("service_name", "{{ 7*7 }}"),
    "yaml": ("service_name", "&anchor !!python/object:os.system"),
    "huge": ("service_name", "a" * 1_000_000),
    "keyword": ("service_name", "lambda"),
    "non_ascii": ("service_name", "écrivain"),
    "domain_keyword": ("domain", "import"),
    "domain_traversal": ("domain", "../x"),
    "node_type": ("node_type", "effect; rm -rf /"),
    "wrong_type_list": ("service_name", ["postgres-writer"]),
    "wrong_type_dict": ("operations", {"insert": True}),
    "wrong_type_number": ("description", 3.14),
    "nul_in_description": ("description", "text\x00more"),
    "huge_description": ("description", "x" * 100_000),
    "missing_service": ("service_name", None),
    "operation_control": ("operations", ["insert\x1brows"]),
}


@pytest.mark.parametrize("name", sorted(IDENTIFIER_ATTACKS))
def test_unsafe_identifiers_are_refused_and_nothing_is_written(
    name: str, template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    field, value = IDENTIFIER_ATTACKS[name]
    data = dict(parsed_data)
    if value is None:
        del data[field]
    else:
        data[field] = value
    out = tmp_path / "parent" / "node"

    stage, result = generate_node(data, out, template=template_repo)

    assert stage.status == "failed"
    assert [g.name for g in stage.failed_gates] == ["input_validation"]
    problems = stage.metadata["problems"]
    assert len(problems) == 1
    assert problems[0]["field"].split("[")[0] == field
    assert len(problems[0]["value"]) < 100  # shown safely, never the whole value
    assert len(stage.error or "") < 500
    assert "\x00" not in json.dumps(stage.model_dump(mode="json"))
    assert "output_path" not in result
    assert not (tmp_path / "parent").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert leftovers_beside(out) == []


def test_hostile_node_name_from_generation_is_refused(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "n"
    stage, _ = generate_node(
        parsed_data,
        out,
        generation_result={"node_name": "Node__import__('os')Effect"},
        template=template_repo,
    )
    assert stage.status == "failed"
    assert stage.metadata["problems"][0]["field"] == "generation_result.node_name"
    assert not out.exists()
