"""The PRD analyzer: three input forms, deterministic, clear failures, PRD text is data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onex_scaffold.pipeline.analyzer import AnalysisError, DeterministicAnalyzer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
analyzer = DeterministicAnalyzer()


@pytest.mark.parametrize(
    ("example", "node_type", "service"),
    [
        ("effect-order-writer.md", "effect", "order-writer"),
        ("compute-price-calculator.md", "compute", "price-calculator"),
        ("reducer-order-totals.md", "reducer", "order-totals"),
        ("orchestrator-order-fulfilment.md", "orchestrator", "order-fulfilment"),
    ],
)
def test_markdown_examples(example: str, node_type: str, service: str) -> None:
    text = (EXAMPLES / example).read_text()
    analysis = analyzer.analyze(text, example)
    assert analysis.prd_format == "markdown"
    assert analysis.parsed_data["node_type"] == node_type
    assert analysis.parsed_data["service_name"] == service
    assert analysis.parsed_data["operations"]
    assert analysis.parsed_data["confidence"] >= 0.85
    assert analyzer.analyze(text, example) == analysis  # deterministic


def test_markdown_template_answers_and_node_name() -> None:
    text = (
        "# PRD Analyzer\n\nNode type: compute\nNode name: PRDAnalyzer\nService: prd-analyzer\n"
        "Domain: generation\n\n## Template answers\nhttp_port: 8101\nevent_bus_enabled: true\n"
    )
    analysis = analyzer.analyze(text)
    assert analysis.generation_result == {"node_name": "PRDAnalyzer"}
    assert analysis.extra_answers == {"http_port": 8101, "event_bus_enabled": True}


def test_parsed_data_json_and_yaml_and_wrapped() -> None:
    data = {"node_type": "effect", "service_name": "x-writer", "domain": "db"}
    assert analyzer.analyze(json.dumps(data)).parsed_data == data
    assert (
        analyzer.analyze("node_type: effect\nservice_name: x-writer\ndomain: db\n").parsed_data
        == data
    )
    wrapped = {"parsed_data": data, "generation_result": {"node_name": "XWriter"}}
    analysis = analyzer.analyze(json.dumps(wrapped))
    assert analysis.prd_format == "parsed_data"
    assert analysis.generation_result == {"node_name": "XWriter"}


def test_prose_infers_with_lower_confidence() -> None:
    analysis = analyzer.analyze((EXAMPLES / "prose-notifier.txt").read_text(), "prose.txt")
    assert analysis.prd_format == "prose"
    assert analysis.parsed_data["node_type"] == "effect"
    assert analysis.parsed_data["service_name"] == "customer-notifier"
    assert analysis.parsed_data["confidence"] < 0.85
    assert any("must" in op for op in analysis.parsed_data["operations"])


def test_prose_that_does_not_decide_fails_with_the_field() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyzer.analyze("Something nice\n\nIt is pleasant and friendly.")
    assert caught.value.problems[0][0] == "node_type"
    assert "Node type:" in caught.value.reason


def test_yaml_tags_are_data_not_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"node_type: !!python/object/apply:os.system ['touch {marker}']\nservice_name: x\n"
    with pytest.raises(AnalysisError, match="node type"):
        analyzer.analyze(text)  # the safe loader refuses the tag: read as prose, undecided
    assert not marker.exists()


def test_empty_and_invalid_json() -> None:
    with pytest.raises(AnalysisError):
        analyzer.analyze("   ")
    with pytest.raises(AnalysisError) as caught:
        analyzer.analyze('{"node_type": ')
    assert caught.value.problems == [("prd", "valid JSON")]
