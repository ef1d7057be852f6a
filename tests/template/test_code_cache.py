"""The extension's compiled-code cache: same output, no sharing across incompatible
environments, tracebacks name the current file."""

from __future__ import annotations

import importlib.util
import sys
from types import CodeType, ModuleType

import pytest
from jinja2 import Environment, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from onex_scaffold import template_root


@pytest.fixture(scope="module")
def context_module() -> ModuleType:
    path = template_root() / "extensions" / "context.py"
    spec = importlib.util.spec_from_file_location("_test_onex_context_cache", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _env(context_module: ModuleType, **options: object) -> Environment:
    env = SandboxedEnvironment(**options)
    context_module.cache_compiled_code(env)
    return env


def test_cached_code_renders_like_fresh_code(context_module: ModuleType) -> None:
    source = "{% for x in items %}{{ x | upper }}-{% endfor %}{{ name }}"
    fresh = SandboxedEnvironment().from_string(source).render(items=["a", "b"], name="n")
    first = _env(context_module).from_string(source).render(items=["a", "b"], name="n")
    again = _env(context_module).from_string(source).render(items=["c"], name="m")
    assert first == fresh == "A-B-n"
    assert again == "C-m"


def test_environments_with_other_syntax_do_not_share_code(context_module: ModuleType) -> None:
    source = "[[ name ]] {{ name }}"
    plain = _env(context_module).from_string(source).render(name="x")
    brackets = _env(
        context_module, variable_start_string="[[", variable_end_string="]]"
    ).from_string(source)
    assert plain == "[[ name ]] x"
    assert brackets.render(name="x") == "x {{ name }}"


def test_syntax_errors_are_raised_every_time(context_module: ModuleType) -> None:
    for _ in range(2):
        with pytest.raises(TemplateSyntaxError):
            _env(context_module).from_string("{% if %}")


def _filenames(code: CodeType) -> set[str]:
    names = {code.co_filename}
    for item in code.co_consts:
        if isinstance(item, CodeType):
            names |= _filenames(item)
    return names


def test_cached_code_reports_the_current_file(context_module: ModuleType) -> None:
    """Copier renders each run from a new clone: tracebacks must name that one."""
    source = "{% macro m(x) %}{{ 1 // x }}{% endmacro %}{{ m(zero) }}"
    for folder in ("first", "second"):
        env = _env(context_module)
        code = env.compile(source, "t.jinja", f"/{folder}/t.jinja")
        assert _filenames(code) == {f"/{folder}/t.jinja"}
