"""What a failed publish raises: ``PublishError`` and its kinds, and the error of one
produce attempt (``DeliveryError``), which says whether another attempt can succeed."""

from __future__ import annotations

from confluent_kafka import KafkaError


class PublishError(RuntimeError):
    """An event could not be published after all retries (it may have been dead-lettered).

    ``retriable`` is True when the broker could not be reached (timeouts, breaker open):
    publishing the same event later may succeed. False when the broker refused the record
    itself (too large, not authorised): it never will.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        attempts: int,
        dead_lettered: bool,
        retriable: bool = True,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.attempts = attempts
        self.dead_lettered = dead_lettered
        self.retriable = retriable


class BrokerUnavailableError(PublishError):
    """The circuit breaker is open: nothing was sent, and nothing was dead-lettered either
    (the dead-letter topic lives on the same unreachable broker). Publish again after
    ``retry_after_s``; the consumer loop does that for handlers and leaves the input
    record uncommitted meanwhile."""

    def __init__(
        self, message: str, *, topic: str, retry_after_s: float, attempts: int = 0
    ) -> None:
        super().__init__(
            message, topic=topic, attempts=attempts, dead_lettered=False, retriable=True
        )
        self.retry_after_s = retry_after_s


class PublishManyError(PublishError):
    """Some events of a ``publish_many`` call failed after all retries; the others were
    confirmed. ``failures`` maps each failed event's index to (error text, dead-lettered)."""

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        attempts: int,
        failures: dict[int, tuple[str, bool]],
        delivered: int,
        retriable: bool,
    ) -> None:
        super().__init__(
            message,
            topic=topic,
            attempts=attempts,
            dead_lettered=all(dead for _, dead in failures.values()),
            retriable=retriable,
        )
        self.failures = failures
        self.delivered = delivered


class PublisherClosedError(RuntimeError):
    """``publish`` was called after ``close()``."""


class DeliveryError(RuntimeError):
    """The broker did not confirm one produce attempt."""

    def __init__(self, error: KafkaError | str) -> None:
        super().__init__(str(error))
        self.kafka_error = error if isinstance(error, KafkaError) else None

    @property
    def retriable(self) -> bool:
        err = self.kafka_error
        if err is None:
            return True
        # Records that can never fit or are refused by policy will not succeed on retry.
        return err.code() not in (
            KafkaError.MSG_SIZE_TOO_LARGE,
            KafkaError.INVALID_RECORD,
            KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        )
