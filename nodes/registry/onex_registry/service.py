"""The registry's work inside its node: topics, the view, the Consul reconciler.

``handlers.py`` calls ``RegistryService.start`` from ``on_start`` and ``stop`` from
``on_stop``; everything long-running is a task the node owns (``ctx.spawn``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from confluent_kafka import KafkaException

from . import omnibase
from .consul_registry import ConsulAgent, ConsulUnavailableError, Registration, RegistrySettings
from .discovery import (
    EXPIRED_HEADER,
    DiscoveryConsumer,
    TopicSetupError,
    ensure_discovery_topics,
)
from .reconcile import Reconciler, RegistryView
from .runtime import naming
from .runtime.base import NodeContext
from .runtime.publisher import PublishError
from .runtime.resilience import CircuitOpenError, backoff_delay

log = logging.getLogger(__name__)

READY_VIEW: Final = "registry-view"
READY_CONSUL: Final = "registry-consul"
READY_DISCOVERY: Final = "registry-discovery"


class RegistryService:
    """Owns the registry's tasks; one per node process."""

    def __init__(self, settings: RegistrySettings | None = None) -> None:
        self.settings = settings or RegistrySettings()
        self.view = RegistryView(self.settings)
        self.agent = ConsulAgent(self.settings)
        self.reconciler = Reconciler(self.view, self.agent, self.settings, clock=time.time)
        self.discovery: DiscoveryConsumer | None = None

    async def start(self, ctx: NodeContext) -> None:
        """Called from ``on_start``: returns at once; the work continues in owned tasks."""
        # Not ready until Consul answers (the reconciler's first look at the agent, within
        # milliseconds when it is up). The view is rebuilt while ready: records replayed
        # from the compacted topic are registered as they are read.
        ctx.set_not_ready(
            READY_CONSUL, f"Consul not reached yet at {self.settings.consul_http_addr}"
        )
        self.reconciler.on_consul_state = lambda ok, error: self._consul_state(ctx, ok, error)
        self.reconciler.on_refused = lambda reg, reason: self._dead_letter_refused(ctx, reg, reason)
        ctx.spawn(self.reconciler.run(), name="registry-reconciler")
        run = ctx.spawn(self._run(ctx), name="registry")
        run.add_done_callback(lambda task: self._discovery_stopped(ctx, task))
        ctx.spawn(self._expire_forever(ctx), name="registry-expiry")

    def _consul_state(self, ctx: NodeContext, reachable: bool, error: str) -> None:
        if reachable:
            ctx.set_ready(READY_CONSUL)
        else:
            ctx.set_not_ready(READY_CONSUL, error)

    async def _run(self, ctx: NodeContext) -> None:
        kafka_config = ctx.settings.kafka_common()
        await self._ensure_topics(ctx, kafka_config)
        self.discovery = DiscoveryConsumer(
            kafka_config=kafka_config,
            environment=ctx.environment,
            group_id=f"{ctx.settings.consumer_group}.view",
            settings=self.settings,
            view=self.view,
            reconciler=self.reconciler,
            publisher=ctx.publisher,
            requested_by=ctx.identity.service_name,
        )
        consumer = ctx.spawn(self.discovery.run(), name="registry-discovery")
        consumer.add_done_callback(lambda task: self._discovery_stopped(ctx, task))
        replayed = asyncio.create_task(self.discovery.replayed.wait())
        try:
            await asyncio.wait({consumer, replayed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            replayed.cancel()
        if not self.discovery.replayed.is_set():
            ctx.set_not_ready(READY_VIEW, "the discovery consumer stopped; see the log")
            return
        # Everyone announces again: nodes that started while the registry was away, and nodes
        # whose announcement was compacted into an older value, are brought up to date.
        await self._request_introspection(ctx)

    @staticmethod
    def _discovery_stopped(ctx: NodeContext, task: asyncio.Task[Any]) -> None:
        """The discovery consumer ended: unless the node is stopping, /health says so (503),
        so an orchestrator restarts the registry instead of trusting a deaf one."""
        if task.cancelled():
            return
        error = task.exception()
        if error is None and task.get_name() == "registry":
            return  # the start task's normal end: the consumer runs on
        reason = f"{type(error).__name__}: {error}" if error is not None else "it returned"
        ctx.set_not_ready(READY_DISCOVERY, f"discovery stopped ({task.get_name()}: {reason})")

    async def _dead_letter_refused(
        self, ctx: NodeContext, registration: Registration, reason: str
    ) -> None:
        """Consul refused a record: set it aside on the introspection dead-letter topic."""
        await ctx.publisher.dead_letter(
            source_topic=naming.introspection_topic(ctx.environment),
            original=registration.manifest.encode(),
            error=f"Consul refused the registration: {reason}",
            attempts=1,
            key=registration.node_id,
        )

    async def _expire_forever(self, ctx: NodeContext) -> None:
        """Every ``expiry_interval_s``: forget nodes silent for ``record_ttl_s`` (tombstone on
        the compacted topic, deregister, delete the manifest) and delete KV manifests whose
        node the registry no longer knows (their deletion was lost, e.g. in a crash)."""
        while True:
            await asyncio.sleep(self.settings.expiry_interval_s)
            try:
                await self.expire_once(ctx)
            except (PublishError, CircuitOpenError, ConsulUnavailableError) as error:
                log.warning("expiry round failed, retried next round: %s", error)

    async def expire_once(self, ctx: NodeContext) -> tuple[int, int]:
        """One expiry round; returns (records expired, orphaned manifests deleted)."""
        discovery = self.discovery
        if discovery is None or discovery.replayed_at is None:
            return 0, 0  # the view is incomplete until the replay ends
        now = time.time()
        # Replayed records carry their old age: give live nodes one TTL to answer the
        # introspection request sent after the replay before judging them silent.
        grace = now - discovery.replayed_at < self.settings.node_ttl_s
        expired = [] if grace else self.view.expire(now)
        topic = naming.introspection_topic(ctx.environment)
        for record in expired:
            log.info(
                "%s silent for over %.0fs: expired",
                record.registration.service_id,
                self.settings.record_ttl_s,
            )
            await ctx.publisher.produce(
                topic,
                None,
                key=record.registration.node_id,
                headers=[(EXPIRED_HEADER, repr(record.announced_at))],
            )
        if expired:
            self.reconciler.wake()
        keys = await asyncio.to_thread(self.agent.list_manifest_keys)
        known = {naming.consul_kv_key(node_id) for node_id in self.view.records}
        known |= {removal.kv_key for removal in self.view.removals.values()}
        orphans = [key for key in keys if key not in known]
        # Records arriving while the list was read are in the view by now (KV is written
        # only after a record is): check again right before deleting.
        orphans = [
            key
            for key in orphans
            if key not in {naming.consul_kv_key(n) for n in self.view.records}
        ]
        for start in range(0, len(orphans), 64):
            batch = orphans[start : start + 64]
            await asyncio.to_thread(self.agent.delete_manifests, batch)
        if orphans:
            log.info("deleted %d KV manifest(s) of nodes no longer known", len(orphans))
        return len(expired), len(orphans)

    async def _ensure_topics(self, ctx: NodeContext, kafka_config: dict[str, Any]) -> None:
        attempt = 0
        while True:
            try:
                extra = (
                    list(omnibase.topics(self.settings.omnibase_topic_prefix).values())
                    if self.settings.omnibase_core
                    else []
                )
                changes = await asyncio.to_thread(
                    ensure_discovery_topics,
                    kafka_config,
                    ctx.environment,
                    timeout_s=2.0,
                    extra_topics=extra,
                    replication_factor=ctx.settings.kafka_topic_replication_factor,
                    min_insync_replicas=ctx.settings.kafka_topic_min_insync_replicas,
                )
            except (TopicSetupError, KafkaException, TimeoutError) as error:
                # TimeoutError: a replicated cluster slow to create the topics (measured with
                # two registries creating them at once on three brokers); try again.
                attempt += 1
                delay = backoff_delay(attempt, 0.5, 5.0)
                error = error if str(error) else TopicSetupError("no answer from Kafka in time")
                ctx.set_not_ready(READY_VIEW, f"discovery topics not ready: {error}")
                log.warning("%s; retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
                continue
            for change in changes:
                log.info("topics: %s", change)
            ctx.set_ready(READY_VIEW)
            return

    async def _request_introspection(self, ctx: NodeContext) -> None:
        assert self.discovery is not None
        attempt = 0
        while True:
            try:
                await self.discovery.request_introspection(None, "registry start")
                return
            except (PublishError, CircuitOpenError) as error:  # broker away: keep trying
                attempt += 1
                log.warning("introspection request not delivered: %s", error)
                await asyncio.sleep(backoff_delay(attempt, 0.5, 5.0))

    async def stop(self, ctx: NodeContext) -> None:
        """Called from ``on_stop`` (tasks already cancelled): leave Consul at once.

        The registry's own shutdown event goes out after its consumer stopped, so it
        deregisters itself here instead of waiting for a registry that is gone.
        """
        service_id = naming.consul_service_id(ctx.identity.service_name, ctx.identity.node_id)
        kv_key = naming.consul_kv_key(ctx.identity.node_id)
        try:
            await asyncio.to_thread(self.agent.deregister, service_id)
            await asyncio.to_thread(self.agent.delete_manifests, [kv_key])
        except ConsulUnavailableError as error:
            log.warning("could not deregister the registry itself: %s", error)

    def describe(self) -> dict[str, Any]:
        """The registry's view, for the ``list_nodes`` action and ``/health`` details."""
        now = time.time()
        nodes = [
            {
                "node_id": r.registration.node_id,
                "service_id": r.registration.service_id,
                "service": r.registration.name,
                "live": self.view.is_live(r, now),
                "in_consul": r.registration.service_id in self.view.observed,
                "status": self.view.observed_status.get(r.registration.service_id, "unknown"),
            }
            for r in self.view.records.values()
        ]
        discovery = self.discovery.stats if self.discovery is not None else None
        return {
            "nodes": sorted(nodes, key=lambda n: (str(n["service"]), str(n["node_id"]))),
            "pending_removals": len(self.view.removals),
            "consul_reachable": self.reconciler.stats.consul_reachable,
            "registrations": self.reconciler.stats.registrations,
            "deregistrations": self.reconciler.stats.deregistrations,
            "dead_lettered": discovery.dead_lettered if discovery else 0,
            "refused_by_consul": self.reconciler.stats.refused,
            "replayed": discovery.replayed if discovery else False,
        }
