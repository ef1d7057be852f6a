"""parsed_data -> Copier answers: normalisation, derivation and refusal of unsafe values."""

from __future__ import annotations

from typing import Any

import pytest

from onex_scaffold import InvalidParsedData
from onex_scaffold._mapping import (
    MAX_ACTIONS,
    MAX_TAGS,
    action_from_operation,
    map_parsed_data,
    safe_repr,
    tag_from_text,
)


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "node_type": "effect",
        "service_name": "postgres-writer",
        "domain": "database",
        "description": "Writes rows.",
        "operations": ["Insert rows into PostgreSQL tables"],
        "features": ["connection pooling"],
        "confidence": 0.9,
    }
    data.update(changes)
    return data


def problems_of(data: object, generation_result: dict[str, Any] | None = None) -> list[str]:
    with pytest.raises(InvalidParsedData) as caught:
        map_parsed_data(data, generation_result)
    return [f"{p.field}|{p.rule}|{p.value}" for p in caught.value.problems]


def test_maps_a_typical_record() -> None:
    result = map_parsed_data(base(), {"node_name": "NodePostgresqlWriterEffect"})
    assert result.answers == {
        "node_type": "effect",
        "node_name": "PostgresqlWriter",
        "service_name": "postgres-writer",
        "domain": "database",
        "version": "0.1.0",
        "tags": ["database", "connection-pooling"],
        "description": "Writes rows.",
        "actions": ["insert_rows_into_postgresql_tables"],
        # the operation inserts rows into PostgreSQL: a PostgreSQL writer
        "use_postgres": True,
    }
    assert result.warnings == []
    assert result.derived == {
        "use_postgres": "operations[0] says the node writes to a database: "
        "'Insert rows into PostgreSQL tables'"
    }


@pytest.mark.parametrize("raw", ["EFFECT", "Effect", " effect "])
def test_node_type_is_case_insensitive(raw: str) -> None:
    assert map_parsed_data(base(node_type=raw)).answers["node_type"] == "effect"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Postgres Writer", "postgres-writer"),
        ("postgres_writer", "postgres-writer"),
        ("POSTGRES--writer", "postgres-writer"),
        ("  postgres writer  ", "postgres-writer"),
    ],
)
def test_service_name_is_normalised_to_a_dns_label(raw: str, expected: str) -> None:
    assert map_parsed_data(base(service_name=raw)).answers["service_name"] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("NodePostgresqlWriterEffect", "PostgresqlWriter"),
        ("PostgresqlWriterEffect", "PostgresqlWriter"),
        ("NodePostgresqlWriter", "PostgresqlWriter"),
        ("PostgresqlWriter", "PostgresqlWriter"),
        # a different type suffix is stripped too: the class gets the real type
        ("NodePostgresqlWriterCompute", "PostgresqlWriter"),
    ],
)
def test_node_name_comes_from_generation_result(raw: str, expected: str) -> None:
    answers = map_parsed_data(base(), {"node_name": raw}).answers
    assert answers["node_name"] == expected


def test_node_name_defaults_to_pascal_case_service_name() -> None:
    answers = map_parsed_data(base(service_name="kafka-to-s3-bridge")).answers
    assert answers["node_name"] == "KafkaToS3Bridge"


def test_actions_are_snake_case_deduplicated_and_capped() -> None:
    operations = [
        "Must insert rows into PostgreSQL",
        "insert rows into postgresql",
        "Validate-Input!",
        "!!!",
    ] + [f"Operation number {i}" for i in range(MAX_ACTIONS + 5)]
    result = map_parsed_data(base(operations=operations))
    actions = result.answers["actions"]
    assert actions[:2] == ["insert_rows_into_postgresql", "validate_input"]
    assert len(actions) == MAX_ACTIONS
    assert len(set(actions)) == len(actions)
    assert any("kept the first" in warning for warning in result.warnings)
    assert any("operations[3]" in warning for warning in result.warnings)


@pytest.mark.parametrize("operations", [None, [], ["???"]])
def test_no_operations_keep_the_template_defaults(operations: Any) -> None:
    data = base()
    if operations is None:
        del data["operations"]
    else:
        data["operations"] = operations
    assert "actions" not in map_parsed_data(data).answers


def test_long_operation_is_cut_at_a_word_boundary() -> None:
    action = action_from_operation("Synchronise " + "customer records " * 20)
    assert len(action) <= 48
    assert not action.endswith("_")
    assert action.startswith("synchronise_customer_records")


def test_tags_come_from_domain_and_features_deduplicated_and_capped() -> None:
    features = ["Connection pooling", "connection-pooling", "Café au lait", "database"]
    features += [f"feature {i}" for i in range(MAX_TAGS + 3)]
    result = map_parsed_data(base(features=features))
    tags = result.answers["tags"]
    assert tags[:3] == ["database", "connection-pooling", "cafe-au-lait"]
    assert len(tags) == MAX_TAGS
    assert any("tags, kept the first" in warning for warning in result.warnings)
    assert tag_from_text("   ") == ""


def test_default_version_and_given_version() -> None:
    assert map_parsed_data(base()).answers["version"] == "0.1.0"
    assert map_parsed_data(base(version="2.3.4")).answers["version"] == "2.3.4"
    assert any(p.startswith("version|") for p in problems_of(base(version="v2")))


def test_description_free_text_is_kept_verbatim() -> None:
    text = "Quotes \" ' \"\"\" ''' {{ x }} {% if %} : - &a !!python/object é 漢字\nline 2"
    assert map_parsed_data(base(description=text)).answers["description"] == text


def test_missing_description_uses_the_template_default() -> None:
    data = base()
    del data["description"]
    assert "description" not in map_parsed_data(data).answers


def test_low_confidence_is_a_warning_not_a_problem() -> None:
    result = map_parsed_data(base(confidence=0.2))
    assert any("confidence 0.20" in warning for warning in result.warnings)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "node_type": "gateway",
            "service_name": "../etc/passwd",
            "domain": "class",
            "description": 42,
            "operations": "insert rows",
            "features": [1, None],
            "confidence": "high",
        }
    )
    fields = [p.split("|")[0] for p in problems]
    assert fields == [
        "node_type",
        "service_name",
        "domain",
        "description",
        "operations",
        "features[0]",
        "features[1]",
        "confidence",
    ]
    assert "must be one of effect, compute, reducer, orchestrator" in problems[0]
    assert "path separators" in problems[1]
    assert "keyword" in problems[2]
    assert "got int" in problems[3]


def test_missing_keys_and_wrong_top_level_type_are_problems() -> None:
    problems = problems_of({"description": "only this"})
    assert [p.split("|")[0] for p in problems] == ["node_type", "service_name", "domain"]
    assert all("is required" in p for p in problems)
    assert problems_of(["not", "a", "dict"]) == [
        "parsed_data|must be an object/dict, got list|['not', 'a', 'dict']"
    ]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("service_name", "import", "keyword"),
        ("service_name", "json", "shadow"),
        ("service_name", "asyncio", "shadow"),
        ("service_name", "a/b", "path separators"),
        ("service_name", "a\\b", "path separators"),
        ("service_name", "..", "path separators"),
        ("service_name", "writer\x00", "control characters"),
        ("service_name", "writer\nx", "control characters"),
        ("service_name", "w" * 64, "at most 63"),
        ("service_name", "w" * 10_000, "at most 256"),
        ("service_name", "écrivain", "DNS label"),
        ("service_name", "a: b", "DNS label"),
        ("service_name", "&anchor", "DNS label"),
        ("service_name", "{{ x }}", "DNS label"),
        ("service_name", 7, "got int"),
        ("service_name", ["a"], "got list"),
        ("domain", "Lambda", "keyword"),
        ("domain", "data.base", "lower-case identifier"),
        ("node_type", None, "is required"),
        ("operations", ["ok", {"a": 1}], "got dict"),
        ("operations", ["x" * 600], "at most 500"),
        ("operations", ["Class"], "keyword"),
        ("operations", ["\ud800 surrogate"], "control characters"),
        ("operations", ["a"] * 300, "at most 256 entries"),
        ("features", {"a": 1}, "got dict"),
        ("description", "x" * 5000, "at most 4000"),
        ("description", "nul \x00 byte", "control characters"),
        ("confidence", 1.5, "between 0 and 1"),
        ("confidence", True, "got bool"),
    ],
)
def test_unsafe_values_are_refused(field: str, value: object, words: str) -> None:
    problems = problems_of(base(**{field: value}))
    assert len(problems) == 1, problems
    assert problems[0].startswith(field)
    assert words in problems[0]


def test_bad_node_name_from_generation_result_is_refused() -> None:
    problems = problems_of(base(), {"node_name": "Node../evil"})
    assert problems and problems[0].startswith("generation_result.node_name|")
    problems = problems_of(base(), {"node_name": 12})
    assert "got int" in problems[0]


def test_values_are_shown_safely() -> None:
    shown = safe_repr("x" * 10_000)
    assert len(shown) < 100 and "10002 chars" in shown
    assert safe_repr("a\x00b\n") == "'a\\x00b\\n'"

    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    assert safe_repr(Hostile()) == "<Hostile>"
    message = str(InvalidParsedData([]))
    assert "0 problem(s)" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", "Writes validated rows to PostgreSQL."),
        ("operations", ["Validate row schema", "Insert rows into Postgres tables"]),
        ("features", ["connection pooling", "persists events in a database"]),
    ],
)
def test_a_postgres_writer_turns_use_postgres_on_and_says_so(field: str, value: Any) -> None:
    data = base(description="Does things.", operations=["Validate input"], features=[])
    data[field] = value
    result = map_parsed_data(data)
    assert result.answers["use_postgres"] is True
    assert result.derived["use_postgres"].startswith(field)


@pytest.mark.parametrize(
    "changes",
    [
        {"description": "Reads rows from PostgreSQL and returns them."},
        {"description": "Writes files to disk.", "features": ["retries"]},
        {"node_type": "compute", "description": "Writes results to a database."},
    ],
)
def test_use_postgres_stays_off_unless_an_effect_writes_to_a_database(
    changes: dict[str, Any],
) -> None:
    result = map_parsed_data(base(**{"operations": ["Validate input"], "features": [], **changes}))
    assert "use_postgres" not in result.answers
    assert "use_postgres" not in result.derived
