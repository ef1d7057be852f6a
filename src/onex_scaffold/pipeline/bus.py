"""What the stage nodes' ``handlers.py`` call: the stage of a node, on the bus.

Compute stages (``run_compute_stage``) are the node's pure ``execute_compute``: the node's
runtime consumes the command topic and publishes the returned payload on its
``completed`` topic. Effect stages (``EffectStage``) subscribe to the previous compute
stage's ``completed`` topic, run their stage off the event loop and publish the next event
themselves; they also turn a compute stage's failure into ``NODE_GENERATION_FAILED``.

Delivery is at least once. Stages are idempotent per request and stage: compute stages
are pure, effect stages skip an event they already answered (per process), and the file
writer leaves a folder that already holds the node alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from pydantic import BaseModel, TypeAdapter

from onex_scaffold._template import load_runtime_module
from onex_scaffold.pipeline import events, stages
from onex_scaffold.pipeline.events import (
    CodeGenerated,
    CodeRefined,
    ContractBuilt,
    IntelligenceGathered,
    NodeGenerationFailed,
    NodeGenerationRequested,
    PrdAnalyzed,
    StageName,
    ValidationCompleted,
)

log = logging.getLogger(__name__)

#: Partitions of every pipeline topic: room for several instances of each stage.
PARTITIONS: Final = 4


def topic_replication(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) asked for by ``KAFKA_TOPIC_REPLICATION_FACTOR``
    and ``KAFKA_TOPIC_MIN_INSYNC_REPLICAS``, read by the runtime's ``config.TopicSettings`` as
    every node reads them; 0 = what the cluster can hold (``runtime/topics.py``). A bad value
    raises ``ValueError`` naming the variable."""
    settings = load_runtime_module("config").topic_settings(environ)
    return settings.kafka_topic_replication_factor, settings.kafka_topic_min_insync_replicas


def ensure_topics(bootstrap_servers: str, environment: str, timeout_s: float = 10.0) -> Any:
    """Create the pipeline's topics with ``PARTITIONS`` partitions (or grow them to that)
    before any consumer subscribes (subscribing would create them with the broker default).

    The runtime's ``topics.ensure_topics`` does it, with the nodes' replication rule; returns
    its ``TopicReport``. Raises its ``TopicSetupError`` when Kafka does not answer or refuses.
    """
    factor, insync = topic_replication()
    client_config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "logger": logging.getLogger(f"{__name__}.kafka"),
    }
    return load_runtime_module("topics").ensure_topics(
        client_config,
        events.pipeline_topics(environment),
        replication_factor=factor,
        min_insync_replicas=insync,
        timeout_s=timeout_s,
        partitions=PARTITIONS,
    )


# ---------------------------------------------------------------------------
# Compute stages
# ---------------------------------------------------------------------------

_COMPUTE: Final[dict[str, tuple[TypeAdapter[Any], Callable[[Any], BaseModel]]]] = {
    "prd_analyzer": (TypeAdapter(NodeGenerationRequested), stages.analyze_prd),
    "contract_builder": (TypeAdapter(IntelligenceGathered), stages.build_contract),
    "validator": (TypeAdapter(CodeGenerated | CodeRefined), stages.validate_code),
}


def run_compute_stage(stage: StageName, data: dict[str, Any]) -> dict[str, Any]:
    """A compute stage's ``execute_compute``: the input payload in, the output payload out.

    A payload that is not this stage's input raises ``pydantic.ValidationError``: the node's
    runtime dead-letters it at once and goes on.
    """
    adapter, function = _COMPUTE[stage]
    return events.dump(function(adapter.validate_python(data)))


# ---------------------------------------------------------------------------
# Effect stages
# ---------------------------------------------------------------------------


class Publisher(Protocol):
    async def publish(
        self,
        event_type: str,
        payload: Any,
        correlation_id: Any = None,
        topic: str | None = None,
        key: str | bytes | None = None,
        causation_id: Any = None,
    ) -> Any: ...


class Envelope(Protocol):
    @property
    def event_id(self) -> Any: ...
    @property
    def correlation_id(self) -> Any: ...
    @property
    def payload(self) -> dict[str, Any]: ...


_EFFECT: Final[dict[str, tuple[TypeAdapter[Any], Callable[[Any], BaseModel | None]]]] = {
    "intelligence_gatherer": (TypeAdapter(PrdAnalyzed), stages.gather_intelligence),
    "code_generator": (TypeAdapter(ContractBuilt), stages.generate_code),
    "code_refiner": (TypeAdapter(ValidationCompleted), stages.refine_code),
    "file_writer": (TypeAdapter(ValidationCompleted), stages.write_files),
}
#: Which effect stage reports a failure of the compute stage before it (exactly one).
_FORWARDS_FAILURES: Final = frozenset({"intelligence_gatherer", "code_generator", "code_refiner"})
_FAILED: Final = TypeAdapter(NodeGenerationFailed)
_REMEMBERED: Final = 4096


class EffectStage:
    """One effect stage of a node: ``subscriptions`` and ``handle`` for its handlers."""

    def __init__(self, stage: StageName) -> None:
        if stage not in _EFFECT:
            raise ValueError(f"{stage} is not an effect stage; known: {', '.join(_EFFECT)}")
        self.stage = stage
        self.adapter, self.function = _EFFECT[stage]
        self._answered: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._lock = asyncio.Lock()

    def subscriptions(self, environment: str) -> list[str]:
        return [events.input_topic(self.stage, environment)]

    async def prepare(self, bootstrap_servers: str, environment: str, attempts: int = 5) -> None:
        """Create the pipeline topics (a few short tries; the dev stack creates them too)."""
        for attempt in range(1, attempts + 1):
            try:
                await asyncio.to_thread(ensure_topics, bootstrap_servers, environment, 2.0)
                return
            except Exception as error:  # the stage still runs: the topics may exist already
                if attempt == attempts:
                    log.warning("pipeline topics not checked: %s", error)
                    return
            await asyncio.sleep(min(2.0 * attempt, 10.0))

    async def handle(self, envelope: Envelope, publisher: Publisher, environment: str) -> None:
        """Run the stage on one event and publish what it returns."""
        data = envelope.payload
        if data.get("kind") == "node_generation_failed":
            if self.stage in _FORWARDS_FAILURES:
                failure = _FAILED.validate_python(data)
                await self._publish(failure, envelope, publisher, environment)
            return
        incoming = self.adapter.validate_python(data)  # ValidationError: dead-lettered
        key = (str(envelope.correlation_id), str(incoming.kind), int(getattr(incoming, "round", 0)))
        async with self._lock:
            if key in self._answered:
                log.info("%s: already answered %s, skipped", self.stage, key)
                return
        outcome = await asyncio.to_thread(self.function, incoming)
        if outcome is not None:
            await self._publish(outcome, envelope, publisher, environment)
        async with self._lock:
            self._answered[key] = None
            while len(self._answered) > _REMEMBERED:
                self._answered.popitem(last=False)

    async def _publish(
        self, outcome: BaseModel, cause: Envelope, publisher: Publisher, environment: str
    ) -> None:
        name = events.EVENT_OF_KIND[str(getattr(outcome, "kind", ""))]
        request = getattr(outcome, "request", None)
        await publisher.publish(
            events.event_type(name),
            events.dump(outcome),
            correlation_id=cause.correlation_id,
            topic=events.event_topic(name, environment),
            key=str(request.request_id) if request is not None else None,
            causation_id=cause.event_id,
        )
