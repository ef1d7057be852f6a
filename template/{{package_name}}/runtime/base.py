"""What every node type shares: lifecycle, health, consumers, Kafka topics.

``initialize()``: health server → resources and owner ``on_start`` → connect to
Kafka (in the background if it is absent, with ``/health`` saying why) → publish
the introspection event and await the broker's confirmation → consumers,
heartbeat, broker probe. ``shutdown()`` (bounded by ``SHUTDOWN_GRACE_S``): stop
intake → finish in-flight work and commit → owner ``on_stop`` → shutdown event
and introspection tombstone → flush → close.

Beside it: ``identity`` (``NodeAnswers``, ``NodeIdentity``), ``context``
(``NodeContext``, what owner code gets) and ``announcements`` (introspection,
heartbeat, shutdown event). Those names are importable from here too, as they
always were.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from . import kafka_logs, naming, provenance, topics
from .announcements import NodeAnnouncements
from .config import NodeSettings
from .consumer import ConsumedMessage, EventConsumer
from .context import NodeContext
from .health import HealthServer
from .identity import NodeAnswers, NodeIdentity
from .metrics import Metrics
from .publisher import EventPublisher, PublishError
from .resilience import BreakerState, CircuitBreaker, CircuitOpenError, backoff_delay
from .signing import DiscoverySigner

__all__ = ["WAIT_REPORT_S", "NodeAnswers", "NodeBase", "NodeContext", "NodeIdentity"]

log = logging.getLogger(__name__)

#: While Kafka is unreachable at start, how often the node says it is still waiting.
WAIT_REPORT_S = 30.0


class NodeBase(NodeAnnouncements):
    """Lifecycle shared by the four node types; subclasses add their consumers and hooks."""

    node_type: ClassVar[naming.NodeType]

    def __init__(self, answers: NodeAnswers, settings: NodeSettings | None = None) -> None:
        self.answers = answers
        self.settings = settings or answers.load_settings()
        self.identity = NodeIdentity.from_answers(answers, self.settings)
        s = self.settings
        if "log_level" in s.model_fields_set:
            # LOG_LEVEL from .env too, not only from the process environment that
            # start_node.py reads before any settings exist.
            logging.getLogger().setLevel(s.log_level)
        #: The template version this node was rendered from (announced, in ``/health``).
        self.template_version = provenance.template_version(s.template_version)
        self.metrics = Metrics(
            {
                "service": s.service_name,
                "node_type": answers.node_type,
                "instance_id": self.identity.instance_id,
            }
        )
        kafka_common = s.kafka_common()
        kafka_common["logger"] = kafka_logs.kafka_logger()
        self.kafka_config: dict[str, Any] = kafka_common
        self.publisher = EventPublisher(
            s.kafka_bootstrap_servers,
            s.service_name,
            self.identity.instance_id,
            max_retries=s.publish_max_retries,
            enable_dlq=s.enable_dlq,
            backoff_s=s.publish_backoff_s,
            backoff_max_s=s.publish_backoff_max_s,
            breaker=CircuitBreaker(s.breaker_failure_threshold, s.breaker_reset_s),
            delivery_timeout_ms=s.kafka_delivery_timeout_ms,
            producer_config={
                **{k: v for k, v in kafka_common.items() if k != "bootstrap.servers"},
                "request.timeout.ms": s.kafka_request_timeout_ms,
            },
            metrics=self.metrics,
            environment=s.kafka_environment,
        )
        if s.onex_discovery_key is not None:
            self.publisher.signer = DiscoverySigner.from_text(
                s.onex_discovery_key.get_secret_value(), s.kafka_environment
            )
        self.topics = naming.node_topics(
            s.kafka_environment, s.service_name, answers.node_type, self.input_events()
        )
        self.context = NodeContext(self.identity, s, self.publisher, self.metrics, self.topics)
        self.health = HealthServer(
            s.service_bind_host,
            s.service_port,
            reasons=self.readiness_reasons,
            details=self.health_details,
            metrics=self.metrics.render,
        )
        self.consumers: list[EventConsumer] = []
        self.log = logging.getLogger(f"onex.{s.service_name}")
        self.connected = asyncio.Event()
        self._initialized = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._announced = False
        #: The replication the node created its topics with (None until it did).
        self.topic_replication: topics.Replication | None = None
        self.metrics.gauge(
            "onex_active_operations",
            "Operations in progress.",
            lambda: self.context.active_operations,
        )
        self.metrics.gauge(
            "onex_ready",
            "1 when /health answers 200.",
            lambda: 0.0 if self.readiness_reasons() else 1.0,
        )

    # -- hooks for node types ----------------------------------------------------------

    def input_events(self) -> tuple[str, ...]:
        return ()

    async def open_resources(self) -> None:
        """Open pools and stores before Kafka work starts (type-specific)."""

    async def start_consumers(self) -> None:
        """Create and start this node type's consumers (append them to ``self.consumers``)."""

    async def before_close(self, timeout_s: float) -> None:
        """After intake stopped and in-flight work finished, before consumers close (reducer flush)."""

    async def on_start(self) -> None:
        """Owner's start hook."""

    async def on_stop(self) -> None:
        """Owner's stop hook."""

    async def close_resources(self) -> None:
        """Close what ``open_resources`` opened."""

    # -- health ------------------------------------------------------------------------

    def readiness_reasons(self) -> list[str]:
        reasons: list[str] = []
        if self._stopping:
            reasons.append("shutting down")
        elif not self._initialized:
            reasons.append("not started")
        if not self.connected.is_set() or self.publisher.broker_down:
            reasons.append(f"kafka broker unreachable at {self.settings.kafka_bootstrap_servers}")
        state = self.publisher.breaker.state
        if state is not BreakerState.CLOSED:
            reasons.append(f"publisher circuit breaker {state.name.lower().replace('_', '-')}")
        for consumer in self.consumers:
            if consumer.failed is not None:
                reasons.append(f"consumer {consumer.name} stopped: {consumer.failed}")
        reasons.extend(self.context.not_ready.values())
        return reasons

    def health_details(self) -> dict[str, Any]:
        return {
            "node_id": str(self.identity.node_id),
            "service": self.identity.service_name,
            "node_type": self.identity.node_type,
            "version": self.identity.version,
            "instance_id": self.identity.instance_id,
            "template_version": self.template_version,
            "uptime_s": round(self.metrics.uptime_s, 3),
            "breaker": self.publisher.breaker.state.name.lower(),
            "active_operations": self.context.active_operations,
        }

    @property
    def health_endpoint(self) -> str:
        s = self.settings
        port = self.health.bound_port if s.service_port == 0 else s.service_port
        host = s.service_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{port}/health"

    # -- lifecycle ---------------------------------------------------------------------

    async def initialize(self) -> None:
        """Start the node. Returns once announced, or after ``KAFKA_CONNECT_WAIT_S`` while the
        broker is absent (connection then continues in the background; ``/health`` says 503)."""
        if self._initialized:
            return
        self._initialized = True
        try:
            await self.health.start()
            await self.open_resources()
            await self.on_start()
        except BaseException:
            # Leave nothing running behind a failed start (the caller exits or retries).
            self._initialized = False
            await self.close_resources()
            await self.health.stop()
            raise
        self.context.spawn(self._connect_and_run(), name="kafka-connect")
        try:
            await asyncio.wait_for(self.connected.wait(), self.settings.kafka_connect_wait_s)
        except TimeoutError:
            self.log.warning(
                "Kafka is not reachable at %s yet; the node keeps retrying in the background "
                "and /health answers 503 until it has announced itself",
                self.settings.kafka_bootstrap_servers,
            )

    async def _connect_and_run(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        began = reported = loop.time()
        while not await self.publisher.probe(timeout_s=2.0):
            attempt += 1
            # One clear line at first, then one every WAIT_REPORT_S, not one per retry.
            if attempt == 1:
                self.log.warning(
                    "Kafka is not reachable at %s; retrying in the background, /health "
                    "answers 503 until the node is connected",
                    self.settings.kafka_bootstrap_servers,
                )
            elif loop.time() - reported >= WAIT_REPORT_S:
                reported = loop.time()
                self.log.warning(
                    "still waiting for Kafka at %s (%.0fs, %d attempts)",
                    self.settings.kafka_bootstrap_servers,
                    reported - began,
                    attempt,
                )
            await asyncio.sleep(backoff_delay(attempt, 0.5, 5.0))
        if attempt:
            self.log.info(
                "Kafka reachable at %s after %.1fs",
                self.settings.kafka_bootstrap_servers,
                loop.time() - began,
            )
        await self._create_topics()
        attempt = 0
        while True:
            try:
                await self.announce()
                break
            except (PublishError, CircuitOpenError) as exc:
                attempt += 1
                self.log.warning("introspection not confirmed yet: %s", exc)
                await asyncio.sleep(backoff_delay(attempt, 0.5, 5.0))
        await self.start_consumers()
        self.consumers.append(self._introspection_request_consumer())
        await self.consumers[-1].start()
        self.connected.set()
        self.context.spawn(self._heartbeat_loop(), name="heartbeat")
        self.context.spawn(self._probe_loop(), name="kafka-probe")

    # -- topics, consumers, publishing -------------------------------------------------

    def topics_to_create(self) -> list[str]:
        """The node's topics and their dead-letter topics."""
        own = list(self.topics.values())
        return own + [naming.dead_letter_topic(name) for name in own]

    async def _create_topics(self) -> None:
        """Create the node's topics with the configured replication; until that succeeds
        the node does not announce itself (``/health`` says why)."""
        s = self.settings
        if not s.kafka_create_topics:
            return
        attempt = 0
        while True:
            try:
                report = await asyncio.to_thread(
                    topics.ensure_topics,
                    self.kafka_config,
                    self.topics_to_create(),
                    replication_factor=s.kafka_topic_replication_factor,
                    min_insync_replicas=s.kafka_topic_min_insync_replicas,
                    configs={
                        name: naming.topic_config(s.kafka_environment, name)
                        for name in self.topics.values()
                    },
                )
            except topics.TopicSetupError as exc:
                attempt += 1
                self.context.set_not_ready("topics", str(exc))
                if attempt == 1:
                    self.log.error("%s (retrying every 30s)", exc)
                await asyncio.sleep(30.0 if attempt > 1 else 5.0)
                continue
            break
        self.context.set_ready("topics")
        self.topic_replication = report.replication
        if report.created:
            self.log.info(
                "created %d topics (replication factor %d, min.insync.replicas %d)",
                len(report.created),
                report.replication.replication_factor,
                report.replication.min_insync_replicas,
            )
        for name, replicas in report.under_replicated.items():
            self.log.warning(
                "topic %s exists with %d replica(s), fewer than the %d asked for; it is left "
                "as it is (reassign its partitions to change that)",
                name,
                replicas,
                report.replication.replication_factor,
            )
        if report.not_allowed:
            self.log.warning(
                "not allowed to create topics %s (ACLs): they must be created by the cluster's "
                "operators",
                ", ".join(report.not_allowed),
            )

    def consumer(
        self,
        name: str,
        topics: list[str],
        handler: Callable[[ConsumedMessage], Awaitable[None]],
        **options: Any,
    ) -> EventConsumer:
        """A consumer in this node's group (or ``group_id=...``) with the node's settings."""
        s = self.settings
        return EventConsumer(
            name=name,
            topics=topics,
            group_id=options.pop("group_id", s.consumer_group),
            handler=handler,
            publisher=self.publisher,
            kafka_config={**self.kafka_config, **s.consumer_timings()},
            metrics=self.metrics,
            max_retries=s.handler_max_retries,
            backoff_s=s.handler_backoff_s,
            batch_size=s.consumer_batch_size,
            auto_offset_reset=s.kafka_auto_offset_reset,
            **options,
        )

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.kafka_probe_interval_s)
            await self.publisher.probe(timeout_s=min(3.0, self.settings.kafka_probe_interval_s))

    async def publish_reliably(self, publish: Callable[[], Awaitable[Any]]) -> None:
        """Publish a result: retry while the broker is unavailable; a dead-lettered result
        counts as delivered. While stopping, give up so the input stays uncommitted."""
        attempt = 0
        while True:
            try:
                await publish()
                return
            except PublishError as exc:
                if exc.dead_lettered:
                    return
                if self._stopping:
                    raise
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, 0.5, 5.0))

    # -- shutdown ----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop gracefully within ``SHUTDOWN_GRACE_S``; safe to call more than once."""
        if not self._initialized:
            return
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(), name="node-shutdown")
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_s

        def left(share: float = 1.0) -> float:
            return max(0.1, (deadline - loop.time()) * share)

        if not self.connected.is_set():
            # Still connecting: stop that first so no consumer starts behind our back.
            await self.context.cancel_tasks(left(0.1))

        # 1. stop intake, finish in-flight work, commit what is done
        await asyncio.gather(*(c.drain(left(0.5)) for c in self.consumers), return_exceptions=True)
        try:
            await asyncio.wait_for(self.before_close(left(0.5)), left(0.5))
        except Exception:
            self.log.exception("flushing pending work on shutdown failed")
        # 2. no more background work
        await self.context.cancel_tasks(left(0.2))
        await asyncio.gather(*(c.close() for c in self.consumers), return_exceptions=True)
        try:
            await asyncio.wait_for(self.on_stop(), left(0.3))
        except Exception:
            self.log.exception("on_stop failed")
        # 3. tell the registry, then flush
        if self.connected.is_set() and not self.publisher.closed:
            try:
                await asyncio.wait_for(self._publish_goodbye(), left(0.5))
            except (TimeoutError, PublishError, CircuitOpenError) as exc:
                self.log.warning("shutdown event not confirmed: %s", exc)
            except Exception:
                self.log.exception("shutdown event failed")
        await self.publisher.close(left(0.8))
        try:
            await self.close_resources()
        finally:
            await self.health.stop()
        self.log.info("%s stopped", self.identity.service_name)

    async def __aenter__(self) -> NodeBase:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
