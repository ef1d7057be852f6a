"""Hand a PRD to the running pipeline and follow it to the end.

``request_node(prd, out, bootstrap_servers=...)`` publishes ``NODE_GENERATION_REQUESTED``
(correlation id = request id, record key = request id) and returns a ``PipelineResult``
with the stage records once ``NODE_GENERATION_COMPLETED`` or ``NODE_GENERATION_FAILED``
arrives. ``PipelineClient`` does the same for many requests over one producer and one
consumer. Events are matched by correlation id; a duplicate of an event already seen (at-
least-once delivery) is counted and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from onex_scaffold._offsets import end_offsets
from onex_scaffold._template import load_runtime_module
from onex_scaffold.pipeline import events

# Re-exported: callers catch them from here too.
from onex_scaffold.pipeline.errors import PipelineTimeout as PipelineTimeout
from onex_scaffold.pipeline.errors import PipelineUnavailable as PipelineUnavailable
from onex_scaffold.pipeline.events import (
    NodeGenerationCompleted,
    NodeGenerationFailed,
    NodeGenerationRequested,
    PipelineRequest,
    ProblemModel,
)
from onex_scaffold.pipeline.runner import PipelineResult, make_request

log = logging.getLogger(__name__)

#: Stage that answers each event next (what a timed-out request was waiting for).
NEXT_STAGE: Final = {
    events.NODE_GENERATION_REQUESTED: "prd_analyzer",
    events.PRD_ANALYZED: "intelligence_gatherer",
    events.INTELLIGENCE_GATHERED: "contract_builder",
    events.CONTRACT_BUILT: "code_generator",
    events.CODE_GENERATED: "validator",
    events.CODE_REFINED: "validator",
}

ProgressFn = Callable[[str, Any], None]


@dataclass
class _Pending:
    request: PipelineRequest
    result: PipelineResult
    progress: ProgressFn | None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[tuple[str, int]] = field(default_factory=set)
    last: str = events.NODE_GENERATION_REQUESTED
    validation_passed: bool | None = None

    @property
    def waiting_for(self) -> str:
        if self.last == events.VALIDATION_COMPLETED:
            return "file_writer" if self.validation_passed else "code_refiner"
        return NEXT_STAGE.get(self.last, "prd_analyzer")


class PipelineClient:
    """One producer and one consumer for any number of requests (``async with``)."""

    def __init__(
        self,
        bootstrap_servers: str,
        environment: str = "dev",
        *,
        client_id: str | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.environment = environment
        self.client_id = client_id or f"onex-pipeline-client-{uuid.uuid4().hex[:8]}"
        self._pending: dict[str, _Pending] = {}
        self._producer: Any = None
        self._consumer: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._closing = False
        runtime_events = load_runtime_module("events")
        self._envelope_type: Any = runtime_events.ModelEventEnvelope
        self._source: Any = runtime_events.ModelEventSource(
            service="onex-pipeline-client", instance_id=self.client_id
        )
        self._failed_topics = events.compute_failed_topics(environment)

    async def __aenter__(self) -> PipelineClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        from confluent_kafka import Consumer, KafkaException, Producer

        from onex_scaffold.pipeline.bus import ensure_topics

        quiet = logging.getLogger("onex_scaffold.pipeline.librdkafka")
        setup_error = load_runtime_module("topics").TopicSetupError
        try:
            await asyncio.to_thread(ensure_topics, self.bootstrap_servers, self.environment, 5.0)
        except (KafkaException, setup_error) as error:
            raise PipelineUnavailable(
                f"Kafka at {self.bootstrap_servers} did not answer ({error.args[0]}); is the "
                "stack up? `onex-node dev up`, or pass --bootstrap-servers"
            ) from error
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "client.id": self.client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "compression.type": "lz4",
                "logger": quiet,
            }
        )
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": self.client_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "fetch.wait.max.ms": 20,
                "fetch.error.backoff.ms": 50,
                "logger": quiet,
            }
        )
        request_topic = events.event_topic(events.NODE_GENERATION_REQUESTED, self.environment)
        watched = [t for t in events.pipeline_topics(self.environment) if t != request_topic]
        self._consumer = consumer
        try:
            # The end is read before any request goes out, so no answer is missed.
            ends = await asyncio.to_thread(end_offsets, consumer, watched)
            await asyncio.to_thread(consumer.assign, ends)
        except KafkaException as error:
            await self.close()
            raise PipelineUnavailable(
                f"Kafka at {self.bootstrap_servers} did not say where the pipeline's topics "
                f"end ({error.args[0]}); try again once the cluster has a leader for each"
            ) from error
        self._poller = asyncio.create_task(self._poll(), name="pipeline-client-poll")

    async def close(self) -> None:
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
            self._consumer = None
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 5)
            self._producer = None

    async def request(
        self,
        request: PipelineRequest,
        *,
        timeout_s: float = 120.0,
        progress: ProgressFn | None = None,
    ) -> PipelineResult:
        """Send one request and wait for its end; raises ``PipelineTimeout``."""
        if self._producer is None:
            raise RuntimeError("start() the client first (or use `async with`)")
        key = str(request.request_id)
        pending = _Pending(request, PipelineResult(request.request_id, "running"), progress)
        self._pending[key] = pending
        try:
            payload = events.dump(NodeGenerationRequested(request=request))
            envelope = self._envelope_type(
                event_type=events.event_type(events.NODE_GENERATION_REQUESTED),
                correlation_id=request.request_id,
                source=self._source,
                payload=payload,
            )
            await self._produce(
                events.event_topic(events.NODE_GENERATION_REQUESTED, self.environment),
                key,
                envelope.to_bytes(),
            )
            pending.result.events.append(events.NODE_GENERATION_REQUESTED)
            if progress:
                progress(events.NODE_GENERATION_REQUESTED, None)
            try:
                await asyncio.wait_for(pending.done.wait(), timeout_s)
            except TimeoutError:
                raise PipelineTimeout(request.request_id, pending.waiting_for, timeout_s) from None
            return pending.result
        finally:
            self._pending.pop(key, None)

    async def _produce(self, topic: str, key: str, value: bytes) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def on_delivery(error: Any, _message: Any) -> None:
            def settle() -> None:
                if delivered.done():
                    return
                if error is not None:
                    delivered.set_exception(PipelineUnavailable(f"request not delivered: {error}"))
                else:
                    delivered.set_result(None)

            loop.call_soon_threadsafe(settle)

        self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
        while not delivered.done():
            await asyncio.to_thread(self._producer.poll, 0.05)
        await delivered

    async def _poll(self) -> None:
        while not self._closing:
            records = await asyncio.to_thread(_ready_records, self._consumer, 200, 0.1)
            for record in records:
                if record.error() is not None:
                    continue
                try:
                    self._dispatch(record.topic(), record.value())
                except Exception:  # one bad record must not stop following the others
                    log.exception("pipeline client: could not read a record")

    def _dispatch(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            envelope = self._envelope_type.from_bytes(value)
        except ValidationError:
            return
        pending = self._pending.get(str(envelope.correlation_id))
        if pending is None:
            return
        if topic in self._failed_topics:
            # The compute node's handler raised (after its retries): its runtime's failed event.
            stage = self._failed_topics[topic]
            failure = NodeGenerationFailed(
                request=pending.request,
                stages=pending.result.stages,
                stage=stage,
                reason=str(envelope.payload.get("error", "the stage failed")),
                problems=[ProblemModel(field="payload", rule="the stage raised an error")],
            )
            self._finish(pending, events.NODE_GENERATION_FAILED, failure)
            return
        try:
            payload = events.parse_payload(envelope.payload)
        except ValidationError as error:
            log.warning("request %s: an event on %s is not a pipeline payload: %s",
                        envelope.correlation_id, topic, error)  # fmt: skip
            return
        key = events.dedup_key(payload)
        if key in pending.seen:
            pending.result.duplicates += 1
            return
        pending.seen.add(key)
        pending.result.sources.append(f"{envelope.source.service}/{envelope.source.instance_id}")
        name = events.EVENT_OF_KIND[payload.kind]
        if name == events.NODE_GENERATION_REQUESTED:
            return
        if isinstance(payload, NodeGenerationFailed | NodeGenerationCompleted):
            self._finish(pending, name, payload)
            return
        pending.last = name
        if name == events.VALIDATION_COMPLETED:
            pending.validation_passed = bool(payload.passed)
        pending.result.events.append(name)
        pending.result.stages = list(payload.stages)
        if pending.progress:
            pending.progress(name, payload)

    def _finish(
        self, pending: _Pending, name: str, payload: NodeGenerationCompleted | NodeGenerationFailed
    ) -> None:
        if pending.done.is_set():
            pending.result.duplicates += 1
            return
        result = pending.result
        result.events.append(name)
        result.stages = list(payload.stages)
        if isinstance(payload, NodeGenerationCompleted):
            result.status, result.completed = "completed", payload
        else:
            result.status, result.failure = "failed", payload
        if pending.progress:
            pending.progress(name, payload)
        pending.done.set()


def default_bootstrap_servers() -> str | None:
    """$KAFKA_BOOTSTRAP_SERVERS, else the dev stack's (``$ONEX_DEV_ROOT`` or the current folder)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    from onex_scaffold.devstack.stack import Stack

    try:
        return Stack(os.environ.get("ONEX_DEV_ROOT", ".")).env().get("KAFKA_BOOTSTRAP_SERVERS")
    except (OSError, ValueError):
        return None


def bus_address(bootstrap_servers: str | None, environment: str | None) -> tuple[str, str]:
    """(Kafka servers, topic environment) for a client of the running pipeline: as given,
    else $KAFKA_BOOTSTRAP_SERVERS / the dev stack's, and $KAFKA_ENVIRONMENT or ``dev``."""
    servers = bootstrap_servers or default_bootstrap_servers()
    if not servers:
        raise PipelineUnavailable(
            "no Kafka to reach the pipeline: set KAFKA_BOOTSTRAP_SERVERS or run "
            "`onex-node dev up` in this folder (it starts the seven stage nodes)"
        )
    return servers, environment or os.environ.get("KAFKA_ENVIRONMENT") or "dev"


async def request_node(
    prd: str,
    output_directory: str | os.PathLike[str],
    *,
    bootstrap_servers: str | None = None,
    environment: str | None = None,
    prd_name: str | None = None,
    template: str | None = None,
    vcs_ref: str | None = None,
    validation: str = "full",
    timeout_s: float = 120.0,
    progress: ProgressFn | None = None,
    dry_run: bool = False,
) -> PipelineResult:
    """Generate (or update) a node through the running pipeline; see the module docstring."""
    servers, env = bus_address(bootstrap_servers, environment)
    request = make_request(
        prd,
        output_directory,
        prd_name=prd_name,
        template=template,
        vcs_ref=vcs_ref,
        validation=validation,
        dry_run=dry_run,
    )
    async with PipelineClient(
        servers,
        env,
        client_id=f"onex-pipeline-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
    ) as client:
        return await client.request(request, timeout_s=timeout_s, progress=progress)


def _ready_records(consumer: Any, most: int, timeout_s: float) -> list[Any]:
    """Up to ``most`` records, waiting ``timeout_s`` for the first one only (as the runtime's
    ``consume_ready``): ``consume(most, timeout)`` holds a lone completion event back until
    the timeout ends."""
    first: list[Any] = consumer.consume(1, timeout_s)
    return first + consumer.consume(most - 1, 0) if first else first
