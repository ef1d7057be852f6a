"""How a node makes itself known on the bus: the introspection event (at start and on
request), the heartbeat, and the shutdown event with the tombstone that removes it from
the compacted introspection topic. ``NodeBase`` has these through ``NodeAnnouncements``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

from . import naming
from .config import NodeSettings
from .consumer import ConsumedMessage, EventConsumer
from .context import NodeContext
from .events import (
    HealthStatus,
    ModelIntrospectionRequest,
    ModelNodeHeartbeatEvent,
    ModelNodeIntrospectionEvent,
    ModelNodeShutdownEvent,
)
from .identity import NodeAnswers, NodeIdentity
from .metrics import Metrics
from .publisher import EventPublisher, PublishError


class NodeAnnouncements:
    """The announcing part of ``NodeBase``: it uses the node's identity, settings and publisher."""

    # Set by NodeBase.__init__.
    answers: NodeAnswers
    settings: NodeSettings
    identity: NodeIdentity
    template_version: str
    metrics: Metrics
    kafka_config: dict[str, Any]
    publisher: EventPublisher
    context: NodeContext
    log: logging.Logger
    connected: asyncio.Event
    _announced: bool

    if TYPE_CHECKING:
        # Defined by NodeBase (health).
        @property
        def health_endpoint(self) -> str: ...

        def readiness_reasons(self) -> list[str]: ...

    def introspection_event(
        self, correlation_id: uuid.UUID | None = None
    ) -> ModelNodeIntrospectionEvent:
        ident = self.identity
        return ModelNodeIntrospectionEvent.create_from_node_info(
            node_id=ident.node_id,
            node_name=naming.class_name(ident.node_name, ident.node_type),
            version=ident.version,
            node_type=ident.node_type,
            service_name=ident.service_name,
            domain=ident.domain,
            instance_id=ident.instance_id,
            actions=ident.actions,
            protocols=self.answers.protocols,
            metadata={**self.answers.metadata, **self.capability_metadata()},
            # No tags among the answers: the defaults, [domain, node_type, service_name].
            tags=ident.tags or None,
            health_endpoint=self.health_endpoint,
            description=ident.description,
            template_version=self.template_version,
            correlation_id=correlation_id,
        )

    def capability_metadata(self) -> dict[str, str]:
        return {"class_name": naming.class_name(self.identity.node_name, self.identity.node_type)}

    async def announce(self, correlation_id: uuid.UUID | None = None) -> None:
        """Publish the introspection event keyed by node_id and await the broker's confirmation."""
        event = self.introspection_event(correlation_id)
        await self.publisher.publish(
            naming.EVENT_NODE_INTROSPECTION,
            event.model_dump(mode="json"),
            correlation_id=event.correlation_id,
            topic=naming.introspection_topic(self.settings.kafka_environment),
            key=str(self.identity.node_id),
            dead_letter=False,
        )
        self._announced = True
        self.log.info(
            "announced %s (node_id %s, template %s)",
            self.identity.service_name,
            self.identity.node_id,
            self.template_version,
        )

    def _introspection_request_consumer(self) -> EventConsumer:
        s = self.settings

        async def on_request(message: ConsumedMessage) -> None:
            assert message.envelope is not None
            request = ModelIntrospectionRequest.model_validate(message.envelope.payload)
            if request.service_name in (None, self.identity.service_name):
                await self.announce(correlation_id=message.envelope.correlation_id)

        # Every instance must see every request: one group per node id, starting at the end.
        return EventConsumer(
            name="introspection-requests",
            topics=[naming.introspection_request_topic(s.kafka_environment)],
            group_id=f"{s.consumer_group}.introspection.{self.identity.node_id}",
            handler=on_request,
            publisher=self.publisher,
            kafka_config={**self.kafka_config, **s.consumer_timings()},
            metrics=self.metrics,
            max_retries=1,
            auto_offset_reset="latest",
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            await self.heartbeat()

    async def heartbeat(self) -> None:
        reasons = self.readiness_reasons()
        status: HealthStatus = (
            "healthy" if not reasons else "degraded" if self.connected.is_set() else "unhealthy"
        )
        event = ModelNodeHeartbeatEvent(
            node_id=self.identity.node_id,
            service_name=self.identity.service_name,
            instance_id=self.identity.instance_id,
            status=status,
            uptime_s=self.metrics.uptime_s,
            active_operations=self.context.active_operations,
            reasons=reasons,
        )
        try:
            await self.publisher.publish(
                naming.EVENT_NODE_HEARTBEAT,
                event.model_dump(mode="json"),
                topic=naming.heartbeat_topic(self.settings.kafka_environment),
                key=str(self.identity.node_id),
                dead_letter=False,
            )
        except PublishError as exc:
            self.log.warning("heartbeat not delivered: %s", exc)

    async def _publish_goodbye(self) -> None:
        env = self.settings.kafka_environment
        event = ModelNodeShutdownEvent(
            node_id=self.identity.node_id,
            service_name=self.identity.service_name,
            instance_id=self.identity.instance_id,
        )
        key = str(self.identity.node_id)
        await self.publisher.publish(
            naming.EVENT_NODE_SHUTDOWN,
            event.model_dump(mode="json"),
            topic=naming.shutdown_topic(env),
            key=key,
            dead_letter=False,
        )
        # Remove this node from the compacted introspection snapshot.
        await self.publisher.publish_tombstone(naming.introspection_topic(env), key)
