"""Who a node is: the answers it was generated with, and the identity derived from them
and its settings (node id, instance id, names) that it announces and logs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import naming
from .config import NodeSettings


@dataclass(frozen=True)
class NodeAnswers:
    """The generation-time answers ``node.py`` bakes in; the environment may override the
    deployment-specific ones (service name, version, port, Kafka address, environment)."""

    node_name: str
    node_type: naming.NodeType
    service_name: str
    domain: str
    version: str
    description: str = ""
    actions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    http_port: int = 8000
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_environment: str = "dev"
    protocols: tuple[str, ...] = ("kafka", "http")
    metadata: Mapping[str, str] = field(default_factory=dict)
    settings_defaults: Mapping[str, Any] = field(default_factory=dict)

    def load_settings(self, **overrides: Any) -> NodeSettings:
        """Settings from the environment, falling back to these answers."""
        defaults: dict[str, Any] = {
            "service_name": self.service_name,
            "service_version": self.version,
            "service_port": self.http_port,
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "kafka_environment": self.kafka_environment,
            **self.settings_defaults,
            **overrides,
        }
        return NodeSettings(**defaults)


@dataclass(frozen=True)
class NodeIdentity:
    """The node as it announces itself: ``NodeAnswers`` with the environment's overrides."""

    node_id: uuid.UUID
    node_name: str
    node_type: naming.NodeType
    service_name: str
    domain: str
    version: str
    instance_id: str
    description: str
    actions: tuple[str, ...]
    tags: tuple[str, ...]

    @classmethod
    def from_answers(cls, answers: NodeAnswers, settings: NodeSettings) -> NodeIdentity:
        instance_id = settings.effective_instance_id
        return cls(
            node_id=naming.node_id_for(settings.service_name, instance_id),
            node_name=answers.node_name,
            node_type=answers.node_type,
            service_name=settings.service_name,
            domain=answers.domain,
            version=settings.service_version,
            instance_id=instance_id,
            description=answers.description,
            actions=answers.actions,
            tags=answers.tags,
        )
