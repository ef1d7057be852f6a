"""What counts as unrendered Jinja in a generated file (``render.jinja_leftovers``)."""

from __future__ import annotations

import pytest

from onex_scaffold import jinja_leftovers


@pytest.mark.parametrize(
    "text",
    [
        "name = {{ node_name }}",
        "x = '{{node_name|py_str}}'",
        "{{ 7 * 191 }}",
        "{%- if use_postgres %}",
        "{% endfor %}",
    ],
)
def test_jinja_syntax_is_a_leftover(text: str) -> None:
    assert jinja_leftovers(text)


@pytest.mark.parametrize(
    "text",
    [
        # Python f-string braces the runtime legitimately contains.
        """f'{{"event_id":"{uuid_text(event_id)}","event_type":{kind},'""",
        'f"{{}}"',
        'f"{{{value}}}"',
        "empty = {}",
        "percent = '%s' % (x,)",
    ],
)
def test_python_braces_are_not_leftovers(text: str) -> None:
    assert jinja_leftovers(text) == []
