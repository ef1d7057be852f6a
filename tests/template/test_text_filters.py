"""The free-text filters: output reads back as the input and stays inert."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


text = _load("_onex_test_text", ROOT / "extensions" / "text.py")

HOSTILE = [
    "",
    "plain words",
    "He said \"hi\" and 'bye'",
    "\"\"\"triple\"\"\" and '''single triple'''",
    "back\\slash \\n not a newline \\",
    "line one\nline two\r\nline three\ttab",
    "{{ 7 * 191 }} {% if true %}jinja{% endif %} {# comment #}",
    "f-string {name} {0} {{}} %s %(x)s",
    "# not a comment\n---\n- not a list\nkey: value\n? question\n& anchor *alias ! tag | > @ `",
    '"; import os; os.system("echo pwned"); "',
    "\x00\x07\x1b[31mred\x7f",
    "bidi \u202e evil \u2066 isolate \u200b zero width \ufeff bom",
    "separators \u2028 line \u2029 para \x85 nel",
    "unicode: café naïve 日本語 emoji \U0001f600",
    "\ud800 lone surrogate",
    "ends with backslash\\",
    "[link](http://example.com) <script>alert(1)</script> *em* _u_ | table |",
    'trailing quote"',
    "'",
    '"',
]


def expected(value: str) -> str:
    return text.clean(value)


@pytest.mark.parametrize("value", HOSTILE)
def test_py_str_round_trips(value: str) -> None:
    literal = text.py_str(value)
    node = ast.parse(f"X = {literal}\n")
    assigned = node.body[0]
    assert isinstance(assigned, ast.Assign)
    assert isinstance(assigned.value, ast.Constant), "must be a plain literal, not an f-string"
    assert assigned.value.value == expected(value)
    assert "\n" not in literal and "\r" not in literal


def test_py_str_is_ruff_format_stable(tmp_path: Path) -> None:
    source = "".join(f"X{i} = {text.py_str(v)}\n" for i, v in enumerate(HOSTILE))
    path = tmp_path / "literals.py"
    path.write_text(source, encoding="utf-8")
    result = subprocess.run(
        ["ruff", "format", "--check", "--diff", "--no-cache", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value", HOSTILE)
def test_yaml_str_round_trips(value: str) -> None:
    scalar = text.yaml_str(value)
    assert yaml.safe_load(f"key: {scalar}\nother: 1\n") == {"key": expected(value), "other": 1}
    assert "\n" not in scalar


@pytest.mark.parametrize("value", HOSTILE)
def test_toml_str_round_trips(value: str) -> None:
    literal = text.toml_str(value)
    assert tomllib.loads(f"key = {literal}\nother = 1\n") == {"key": expected(value), "other": 1}


@pytest.mark.parametrize("value", HOSTILE)
def test_md_text_is_inert(value: str) -> None:
    rendered = text.md_text(value)
    for line in rendered.split("  \n"):
        assert line == line.strip(), "no indentation (code blocks)"
        assert "\n" not in line and "\r" not in line
        # Every ASCII punctuation character is escaped: nothing can open markup.
        for i, ch in enumerate(line):
            if ch in "#*_`[]<>|{}!-" and (i == 0 or line[i - 1] != "\\"):
                pytest.fail(f"unescaped {ch!r} in {line!r}")


@pytest.mark.parametrize("value", HOSTILE)
def test_hash_comment_stays_a_comment(value: str) -> None:
    comment = text.hash_comment(value)
    for line in comment.split("\n"):
        assert line.startswith("#")
        assert "\r" not in line and "\u2028" not in line and "\x85" not in line


def test_one_line() -> None:
    assert text.one_line("a\n\n b\t c  ") == "a b c"
    assert text.one_line("x" * 50, 10) == "xxxxxxx..."
    assert "\u202e" not in text.one_line("bidi \u202e evil")
