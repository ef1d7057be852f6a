"""Reading records back from the live Kafka in tests."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError


def record_value(message: Any) -> bytes | None:
    """The value of a consumed `confluent_kafka.Message`; None for the end-of-partition
    notice. Any other error, or a record without a value, fails the test."""
    error = message.error()
    if error is not None:
        assert error.code() == KafkaError._PARTITION_EOF, error
        return None
    value = message.value()
    assert value is not None
    return bytes(value)
