"""Invalid answers are refused by Copier, naming the question and the rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import run_python

from onex_scaffold import AnswerError, render_node

VALID: dict[str, Any] = {
    "node_type": "effect",
    "node_name": "PostgresqlWriter",
    "service_name": "postgres-writer",
    "domain": "database",
}

# (question, bad value, extra answers, words the message must contain)
CASES: list[tuple[str, Any, dict[str, Any], str]] = [
    ("node_type", "gateway", {}, "gateway"),
    ("node_name", "bad-name", {}, "PascalCase"),
    ("node_name", "postgresWriter", {}, "PascalCase"),
    ("node_name", "None", {}, "keyword"),
    ("node_name", "A" * 65, {}, "at most 64"),
    ("service_name", "Postgres_Writer", {}, "DNS label"),
    ("service_name", "a" * 64, {}, "at most 63"),
    ("service_name", "writer-", {}, "DNS label"),
    ("domain", "Database", {}, "lower-case identifier"),
    ("domain", "class", {}, "keyword"),
    ("version", "1.0", {}, "semantic version"),
    ("http_port", 80, {}, "between 1024 and 65535"),
    ("http_port", 70000, {}, "between 1024 and 65535"),
    ("actions", ["execute effect"], {}, "snake_case"),
    ("actions", "execute_effect", {}, "must be a list"),
    ("actions", [], {}, "at least one"),
    ("actions", ["run", "run"], {}, "more than once"),
    ("tags", ["has space"], {}, "rule 'tag'"),
    ("kafka_environment", "Prod", {}, "lower-case word"),
    ("kafka_bootstrap_servers", "broker-without-port", {}, "host:port"),
    ("kafka_bootstrap_servers", "a:9092,b:99999", {}, "host:port"),
    ("aggregation_window_s", 0, {"node_type": "reducer"}, "more than 0"),
    ("state_backend", "redis", {"node_type": "reducer"}, "redis"),
    ("input_events", ["Order_Placed"], {"node_type": "reducer"}, "DNS label"),
    ("workflow_steps", ["step one"], {"node_type": "orchestrator"}, "snake_case"),
    ("workflow_steps", [], {"node_type": "orchestrator"}, "at least one"),
]


@pytest.mark.parametrize(
    ("question", "value", "extra", "words"),
    CASES,
    ids=[f"{c[0]}={c[1]!r}"[:40] for c in CASES],
)
def test_invalid_answer_refused(
    copier_template: Path,
    tmp_path: Path,
    question: str,
    value: Any,
    extra: dict[str, Any],
    words: str,
) -> None:
    data = {**VALID, **extra, question: value}
    with pytest.raises(AnswerError) as caught:
        render_node(tmp_path / "node", data, template=copier_template)
    message = str(caught.value)
    assert f"'{question}'" in message, message
    assert words in message
    assert not (tmp_path / "node" / "pyproject.toml").exists()


def test_missing_required_answer(copier_template: Path, tmp_path: Path) -> None:
    data = {k: v for k, v in VALID.items() if k != "service_name"}
    with pytest.raises(AnswerError, match="service_name"):
        render_node(tmp_path / "node", data, template=copier_template)


def test_cli_refuses_with_question_named(copier_template: Path, tmp_path: Path) -> None:
    """The plain `copier copy` command line refuses too, and says which question."""
    result = run_python(
        *("-m", "copier", "copy", "--trust", "--defaults"),
        *(f"--data={k}={v}" for k, v in {**VALID, "service_name": "Bad_Name"}.items()),
        copier_template,
        tmp_path / "node",
        timeout=120,
    )
    assert result.returncode != 0
    assert "service_name" in result.stderr and "DNS label" in result.stderr, result.stderr
