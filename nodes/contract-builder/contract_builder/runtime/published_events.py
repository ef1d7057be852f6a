"""What ``publish_many`` returns: the envelopes of its events, built only when read."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, overload

from .events import EnvelopeEncoder, ModelEventEnvelope, metadata_model, uuid_from_int


class PublishedEvents(Sequence[ModelEventEnvelope]):
    """The envelopes of one ``publish_many`` call, in order, each built when read: bulk
    producers rarely read them, and building them all would cost as much as the JSON."""

    def __init__(
        self,
        encoder: EnvelopeEncoder,
        event_type: str,
        correlation_id: int,
        causation_id: uuid.UUID | None,
        timestamp: datetime,
        bodies: list[dict[str, Any]],
        trace: tuple[str, str | None, dict[str, Any]],
    ) -> None:
        self._encoder = encoder
        self._trace = trace
        self.spans: list[str] = []
        self._event_type = event_type
        self._correlation_id = correlation_id
        self._causation_id = causation_id
        self._timestamp = timestamp
        self._bodies = bodies
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> ModelEventEnvelope: ...

    @overload
    def __getitem__(self, index: slice) -> list[ModelEventEnvelope]: ...

    def __getitem__(self, index: int | slice) -> ModelEventEnvelope | list[ModelEventEnvelope]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._encoder.envelope(
            self.ids[index],
            self._event_type,
            self._correlation_id,
            self._causation_id,
            self._timestamp,
            metadata_model(self._trace[0], self.spans[index], self._trace[1], self._trace[2]),
            self._bodies[index],
        )

    @property
    def event_ids(self) -> list[uuid.UUID]:
        return [uuid_from_int(value) for value in self.ids]
