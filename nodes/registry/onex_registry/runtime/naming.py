"""Names shared by every ONEX node, the registry and the generator.

This module is the single source of truth for identifier rules, event types and
Kafka topic names. The template renders it into every node unchanged, and the
generator (``extensions/`` and ``onex_scaffold``) loads this very file, so a
topic name can never differ between the publisher and the registry.

It depends on the standard library only, on purpose: the generator imports it
before any node dependency is installed.
"""

from __future__ import annotations

import keyword
import re
import uuid
from typing import Final, Literal

NodeType = Literal["effect", "compute", "reducer", "orchestrator"]
NODE_TYPES: Final[tuple[NodeType, ...]] = ("effect", "compute", "reducer", "orchestrator")

#: Topic namespace. Matches the bridge convention
#: ``{env}.{namespace}.onex.{evt|cmd|rsp|aud|dlt}.{kebab-event}.v{n}``.
TOPIC_NAMESPACE: Final = "omninode_bridge"

# ---------------------------------------------------------------------------
# Identifier rules. Each rule is (pattern, human description); ``check`` turns
# them into one message that names the rule, so Copier validators, the Stage 4.5
# mapping and the runtime all refuse the same values with the same words.
# ---------------------------------------------------------------------------

RULES: Final[dict[str, tuple[str, str]]] = {
    "node_name": (
        r"[A-Z][A-Za-z0-9]{0,63}",
        "PascalCase: a capital letter, then letters or digits, at most 64 characters",
    ),
    "service_name": (
        r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?",
        "a lower-case DNS label: a-z, 0-9 and '-', starting with a letter, "
        "not ending with '-', at most 63 characters",
    ),
    "domain": (
        r"[a-z][a-z0-9_]{0,62}",
        "a lower-case identifier: a-z, 0-9 and '_', starting with a letter, at most 63 characters",
    ),
    "action": (
        r"[a-z][a-z0-9_]{0,62}",
        "a snake_case identifier: a-z, 0-9 and '_', starting with a letter, at most 63 characters",
    ),
    "tag": (
        r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}",
        "letters, digits and '_.:-', starting with a letter or digit, at most 63 characters",
    ),
    "kafka_environment": (
        r"[a-z][a-z0-9_-]{0,31}",
        "a lower-case word: a-z, 0-9, '_' and '-', starting with a letter, at most 32 characters",
    ),
    "version": (
        r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
        r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?",
        "semantic version MAJOR.MINOR.PATCH, e.g. 0.1.0",
    ),
}

#: Rules whose values become Python identifiers and so must not be keywords.
_IDENTIFIER_RULES: Final = frozenset({"node_name", "domain", "action"})

_COMPILED: Final = {name: re.compile(pattern) for name, (pattern, _) in RULES.items()}


def check(rule: str, value: object) -> str:
    """Return ``""`` when ``value`` satisfies ``rule``, else a message naming the rule."""
    if rule not in RULES:
        raise KeyError(f"unknown naming rule {rule!r}; known: {', '.join(sorted(RULES))}")
    description = RULES[rule][1]
    if not isinstance(value, str):
        return f"must be a string ({description}), got {type(value).__name__}"
    if not _COMPILED[rule].fullmatch(value):
        return f"must be {description}"
    if rule in _IDENTIFIER_RULES and (keyword.iskeyword(value) or keyword.issoftkeyword(value)):
        return f"must not be a Python keyword ({value})"
    return ""


# ---------------------------------------------------------------------------
# Derived names
# ---------------------------------------------------------------------------


def class_name(node_name: str, node_type: str) -> str:
    """``PostgresqlWriter`` + ``effect`` -> ``NodePostgresqlWriterEffect``."""
    return f"Node{node_name}{node_type.capitalize()}"


def package_name(service_name: str) -> str:
    """The node's import package: ``postgres-writer`` -> ``postgres_writer``."""
    return service_name.replace("-", "_")


def snake_case(text: str) -> str:
    """``PostgresqlWriter`` -> ``postgresql_writer``; also folds '-' and spaces to '_'."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def kebab_case(text: str) -> str:
    return snake_case(text).replace("_", "-")


def node_id_for(service_name: str, instance_id: str) -> uuid.UUID:
    """A node's stable id: the same service instance keeps its id across restarts,
    so a restarted node replaces its own registration instead of adding a second."""
    return uuid.uuid5(_NODE_ID_NAMESPACE, f"{service_name}/{instance_id}")


_NODE_ID_NAMESPACE: Final = uuid.UUID("6f1b1e0a-8a8e-5c4e-9d3a-0e5f1c2b7a90")


def consul_service_id(service_name: str, node_id: uuid.UUID | str) -> str:
    """The Consul service ID the registry registers a node under."""
    return f"{service_name}-{node_id}"


def consul_kv_key(node_id: uuid.UUID | str) -> str:
    """Where the registry keeps a node's full capability manifest in Consul KV."""
    return f"onex/nodes/{node_id}"


# ---------------------------------------------------------------------------
# Event types
# ---------------------------------------------------------------------------

EVENT_NODE_INTROSPECTION: Final = "omninode.discovery.node_introspection.v1"
EVENT_NODE_HEARTBEAT: Final = "omninode.discovery.node_heartbeat.v1"
EVENT_NODE_SHUTDOWN: Final = "omninode.discovery.node_shutdown.v1"
EVENT_INTROSPECTION_REQUESTED: Final = "omninode.discovery.introspection_requested.v1"
EVENT_DEAD_LETTER: Final = "omninode.system.dead_letter.v1"


def node_event_type(domain: str, service_name: str, outcome: str) -> str:
    """Event type of a node's own events, e.g. ``omninode.database.event.postgres_writer_completed.v1``."""
    return f"omninode.{domain}.event.{package_name(service_name)}_{snake_case(outcome)}.v1"


def command_event_type(domain: str, service_name: str) -> str:
    return f"omninode.{domain}.request.{package_name(service_name)}.v1"


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------

TopicKind = Literal["evt", "cmd", "rsp", "aud", "dlt"]


def topic(environment: str, kind: TopicKind, event: str, version: int = 1) -> str:
    """``{env}.{namespace}.onex.{kind}.{kebab-event}.v{n}``."""
    return f"{environment}.{TOPIC_NAMESPACE}.onex.{kind}.{kebab_case(event)}.v{version}"


def introspection_topic(environment: str) -> str:
    """Compacted, keyed by node_id: the durable registry snapshot (tombstone on shutdown)."""
    return topic(environment, "evt", "node-introspection")


def heartbeat_topic(environment: str) -> str:
    return topic(environment, "evt", "node-heartbeat")


def shutdown_topic(environment: str) -> str:
    return topic(environment, "evt", "node-shutdown")


def introspection_request_topic(environment: str) -> str:
    """The registry asks every node to announce itself again here."""
    return topic(environment, "cmd", "registry-request-introspection")


def command_topic(environment: str, service_name: str) -> str:
    """Where a node receives its commands (effect, orchestrator) or input."""
    return topic(environment, "cmd", service_name)


def node_event_topic(environment: str, service_name: str, outcome: str) -> str:
    """A node's own output, e.g. ``...evt.postgres-writer-completed.v1``."""
    return topic(environment, "evt", f"{service_name}-{kebab_case(outcome)}")


def dead_letter_topic(source_topic: str) -> str:
    """Events that exhausted retries or could not be decoded go here, per source topic."""
    return f"{source_topic}.dlq"


#: The event-type kinds of ``omninode.{domain}.{kind}.{name}.v{n}`` and their topic kinds.
EVENT_KIND_TOPIC_KIND: Final[dict[str, TopicKind]] = {
    "event": "evt",
    "request": "cmd",
    "command": "cmd",
    "response": "rsp",
    "audit": "aud",
}

_EVENT_TYPE: Final = re.compile(
    r"omninode\.(?P<domain>[a-z][a-z0-9_]*)\.(?:(?P<kind>[a-z]+)\.)?"
    r"(?P<name>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]{0,3})"
)


def event_topic(environment: str, event_type: str) -> str:
    """The topic an event of ``event_type`` is published to when no topic is given.

    ``omninode.{domain}.{event|request|command|response|audit}.{name}.v{n}`` goes to
    ``topic(environment, evt|cmd|cmd|rsp|aud, name, n)``: a node's own event types
    (``node_event_type``, ``command_event_type``) land on the topics ``node_topics`` lists.
    The discovery events go to the discovery topics. Anything else raises ``ValueError``
    (pass ``topic=`` explicitly); dead letters go to ``dead_letter_topic(source_topic)``.
    """
    known = _DISCOVERY_EVENT_TOPICS.get(event_type)
    if known is not None:
        return known(environment)
    match = _EVENT_TYPE.fullmatch(event_type)
    kind = match["kind"] if match else None
    if match is None or kind is None or kind not in EVENT_KIND_TOPIC_KIND:
        raise ValueError(
            f"cannot derive a topic from event type {event_type!r}: it must read "
            "omninode.{domain}.{event|request|command|response|audit}.{name}.v{n} "
            "(or be a discovery event type); pass topic= explicitly otherwise"
        )
    return topic(environment, EVENT_KIND_TOPIC_KIND[kind], match["name"], int(match["version"]))


#: Topic config of the compacted introspection topic (the durable registry snapshot):
#: tombstones kept a day so every reader sees a node's removal, compaction without delay.
COMPACTED_TOPIC_CONFIG: Final[dict[str, str]] = {
    "cleanup.policy": "compact",
    "delete.retention.ms": str(24 * 3600 * 1000),
    "min.compaction.lag.ms": "0",
    "segment.ms": str(3600 * 1000),
}


def topic_config(environment: str, name: str) -> dict[str, str]:
    """Topic-level config a topic is created with, beyond replication (all others: none)."""
    return dict(COMPACTED_TOPIC_CONFIG) if name == introspection_topic(environment) else {}


def discovery_topics(environment: str) -> dict[str, str]:
    """All topics of the discovery protocol, by role."""
    return {
        "introspection": introspection_topic(environment),
        "heartbeat": heartbeat_topic(environment),
        "shutdown": shutdown_topic(environment),
        "introspection_request": introspection_request_topic(environment),
    }


# ---------------------------------------------------------------------------
# A node's own topics, by node type. The runtime publishes and consumes exactly
# these; the generator uses the same function for contract.yaml and the README.
# ---------------------------------------------------------------------------

#: Outcome names of each node type's own events (``node_event_topic`` suffixes).
OUTCOMES: Final[dict[str, tuple[str, ...]]] = {
    "effect": ("completed", "failed"),
    "compute": ("completed", "failed"),
    # state: replies to get_state (the state as it is, without a new window).
    "reducer": ("state-updated", "state"),
    # workflow-status: replies to get_workflow_status (a query, not a completion).
    "orchestrator": ("workflow-completed", "failed", "workflow-status"),
}


def reducer_input_topic(environment: str, event_name: str) -> str:
    """A reducer input named in the ``input_events`` answer, e.g. ``order-placed``."""
    return topic(environment, "evt", event_name)


def node_topics(
    environment: str,
    service_name: str,
    node_type: str,
    input_events: tuple[str, ...] | list[str] = (),
) -> dict[str, str]:
    """Every topic a node of ``node_type`` uses, by role.

    Roles: ``command`` (consumed by effect, compute and orchestrator nodes), one
    entry per outcome in ``OUTCOMES`` keyed by its snake_case name (published),
    ``input:<event>`` for each reducer input (consumed), and the discovery topics.
    """
    if node_type not in OUTCOMES:
        raise ValueError(
            f"unknown node type {node_type!r}; expected one of {', '.join(NODE_TYPES)}"
        )
    topics: dict[str, str] = {}
    # Every type has a command topic; a reducer's answers get_state queries.
    topics["command"] = command_topic(environment, service_name)
    for outcome in OUTCOMES[node_type]:
        topics[snake_case(outcome)] = node_event_topic(environment, service_name, outcome)
    if node_type == "reducer":
        for name in input_events:
            topics[f"input:{name}"] = reducer_input_topic(environment, name)
    topics.update(discovery_topics(environment))
    return topics


_DISCOVERY_EVENT_TOPICS: Final = {
    EVENT_NODE_INTROSPECTION: introspection_topic,
    EVENT_NODE_HEARTBEAT: heartbeat_topic,
    EVENT_NODE_SHUTDOWN: shutdown_topic,
    EVENT_INTROSPECTION_REQUESTED: introspection_request_topic,
}
