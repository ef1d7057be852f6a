"""The context hook derives names from naming.py; paths see them too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_copier.plugin import CopierFixture

from onex_scaffold import naming


def rendering_context(copier: CopierFixture, **answers: Any) -> dict[str, Any]:
    """What templates see for ``answers``: pytest-copier's ``copier.context`` closes no
    Worker, so each call left a clone of the template in the temp folder; this one does."""
    with copier.worker(**answers) as worker:
        worker._ask()
        env = worker.jinja_env
        context = env.context_class(env, worker._render_context(), "", {}, env.globals)
        return dict(context.get_all())


def test_context_derives_names_from_naming(copier: CopierFixture) -> None:
    names = naming()
    ctx = rendering_context(
        copier,
        node_type="reducer",
        node_name="OrderTotals",
        service_name="order-totals",
        domain="sales",
        kafka_environment="prod",
        input_events=["order-placed"],
    )
    assert ctx["class_name"] == names.class_name("OrderTotals", "reducer")
    assert ctx["package_name"] == names.package_name("order-totals")
    topics = ctx["topics"]
    assert topics["introspection"] == names.introspection_topic("prod")
    assert topics["heartbeat"] == names.heartbeat_topic("prod")
    assert topics["shutdown"] == names.shutdown_topic("prod")
    assert topics["introspection_request"] == names.introspection_request_topic("prod")
    assert topics["command"] == names.command_topic("prod", "order-totals")
    assert topics["state_updated"] == names.node_event_topic(
        "prod", "order-totals", "state-updated"
    )
    assert topics["inputs"] == [names.reducer_input_topic("prod", "order-placed")]
    assert ctx["event_types"]["introspection"] == names.EVENT_NODE_INTROSPECTION
    assert ctx["event_types"]["state_updated"] == names.node_event_type(
        "sales", "order-totals", "state-updated"
    )
    assert ctx["uses_postgres"] is False and ctx["uses_kafka"] is True
    consumed = {item["topic"] for item in ctx["consumed"]}
    assert names.reducer_input_topic("prod", "order-placed") in consumed


def test_defaults_by_node_type(copier: CopierFixture) -> None:
    base = {"node_name": "A", "service_name": "a", "domain": "d"}
    assert rendering_context(copier, node_type="effect", **base)["actions"] == [
        "execute_effect",
        "validate_input",
    ]
    assert rendering_context(copier, node_type="compute", **base)["actions"][0] == "execute_compute"
    assert rendering_context(copier, node_type="reducer", **base)["actions"][0] == "reduce"
    assert (
        rendering_context(copier, node_type="orchestrator", **base)["actions"][0] == "run_workflow"
    )


def test_package_path_rendered_from_hook(copier: CopierFixture, tmp_path: Path) -> None:
    """`{{package_name}}` in paths comes from the hook (not a question): path
    rendering runs through the same Jinja context, so the hook applies there."""
    project = copier.copy(
        tmp_path / "p",
        node_type="effect",
        node_name="A",
        service_name="multi-part-name",
        domain="d",
    )
    assert (project.path / "multi_part_name" / "node.py").is_file()
    assert "package_name" not in project.answers
