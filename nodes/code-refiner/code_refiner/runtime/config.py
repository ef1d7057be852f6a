"""Node settings from the environment and ``.env``.

``node.py`` passes the answers given at generation time as keyword arguments;
``.env`` overrides them and the process environment overrides both (see
``settings_customise_sources``), so a deployment changes a node with env vars
only. ``.env`` is read from the working directory and from the project folder
(the one holding ``start_node.py``); the working directory's wins.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from . import naming, provenance

OffsetReset = Literal["earliest", "latest"]
LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
#: Upper bound of the KAFKA_TOPIC_* counts (no cluster keeps more copies of a partition).
_MAX_REPLICAS = 32


class TopicSettings(BaseSettings):
    """The replication of the topics a node, the registry and the pipeline create
    (``runtime/topics.py``): read here once for all of them. 0 = what the cluster can hold:
    ``min(3, brokers)`` replicas, ``min(2, replicas - 1)`` in-sync replicas."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    kafka_topic_replication_factor: int = Field(default=0, ge=0, le=_MAX_REPLICAS)
    kafka_topic_min_insync_replicas: int = Field(default=0, ge=0, le=_MAX_REPLICAS)

    @field_validator(
        "kafka_topic_replication_factor", "kafka_topic_min_insync_replicas", mode="before"
    )
    @classmethod
    def _whole_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = value.strip() if isinstance(value, str) else None
        if text == "":
            return 0  # set but empty: as unset
        if text is None or not text.isdigit() or int(text) > _MAX_REPLICAS:
            name = (info.field_name or "").upper()
            raise ValueError(
                f"{name}={value!r}: must be a whole number from 0 to {_MAX_REPLICAS} "
                "(0 = derive it from the cluster)"
            )
        return int(text)

    @model_validator(mode="after")
    def _insync_within_replication(self) -> TopicSettings:
        factor, insync = self.kafka_topic_replication_factor, self.kafka_topic_min_insync_replicas
        if factor and insync > factor:
            raise ValueError(
                f"KAFKA_TOPIC_MIN_INSYNC_REPLICAS ({insync}) must not exceed "
                f"KAFKA_TOPIC_REPLICATION_FACTOR ({factor}): no write could ever succeed"
            )
        return self


def topic_settings(environ: Mapping[str, str] | None = None) -> TopicSettings:
    """The KAFKA_TOPIC_* settings from ``environ`` (default: the process environment), for
    programs that create topics without being a node (the generation pipeline). A bad value
    raises pydantic's ``ValidationError`` (a ``ValueError``) naming the variable."""
    if environ is None:
        return TopicSettings()
    fields = TopicSettings.model_fields
    values: dict[str, Any] = {
        key.lower(): value for key, value in environ.items() if key.lower() in fields
    }
    return _GivenTopicSettings(**values)


class _GivenTopicSettings(TopicSettings):
    """``TopicSettings`` from the values given only (no process environment, no ``.env``)."""

    model_config = SettingsConfigDict(title="TopicSettings")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class NodeSettings(TopicSettings):
    """Every environment variable a node reads. Names are the upper-case field names."""

    model_config = SettingsConfigDict(
        # Later files win: the working directory's .env over the project folder's.
        env_file=(Path(__file__).resolve().parents[2] / ".env", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # Kafka connection
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_environment: str = "dev"
    kafka_consumer_group: str = ""
    kafka_auto_offset_reset: OffsetReset = "earliest"
    # Security pass-through (librdkafka names: security.protocol, sasl.*, ssl.*)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    # Client timings. Real brokers are fine with librdkafka's defaults; small
    # embedded brokers join groups much faster with short session timeouts.
    kafka_session_timeout_ms: int = Field(default=45_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)
    kafka_delivery_timeout_ms: int = Field(default=30_000, ge=1_000)
    kafka_probe_interval_s: float = Field(default=5.0, gt=0)
    # Topics the node creates (runtime/topics.py); their replication settings
    # (KAFKA_TOPIC_REPLICATION_FACTOR, KAFKA_TOPIC_MIN_INSYNC_REPLICAS): TopicSettings.
    kafka_create_topics: bool = True
    kafka_connect_wait_s: float = Field(default=10.0, ge=0)

    # Publisher resilience
    publish_max_retries: int = Field(default=3, ge=0)
    publish_backoff_s: float = Field(default=0.5, ge=0)
    publish_backoff_max_s: float = Field(default=10.0, ge=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    enable_dlq: bool = True
    #: Signs discovery records (runtime/signing.py); unset: unsigned, as the dev stack runs.
    onex_discovery_key: SecretStr | None = None

    # Consumer
    handler_max_retries: int = Field(default=3, ge=0)
    handler_backoff_s: float = Field(default=0.2, ge=0)
    consumer_batch_size: int = Field(default=100, ge=1)

    # Identity
    service_name: str = "onex-node"
    service_version: str = "0.1.0"
    service_host: str = Field(default_factory=socket.gethostname)
    service_port: int = Field(default=8000, ge=0, le=65535)
    #: Interface the HTTP server listens on: all (containers) by default.
    service_bind_host: str = "0.0.0.0"
    instance_id: str = ""
    #: The template version the node was rendered from; empty: read from the answers file.
    template_version: str = ""

    # Lifecycle
    log_level: LogLevel = "INFO"
    heartbeat_interval_s: float = Field(default=30.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, gt=0)

    # Resources
    database_url: SecretStr | None = None
    database_pool_min: int = Field(default=1, ge=0)
    database_pool_max: int = Field(default=5, ge=1)
    reducer_state_path: str = ""
    aggregation_window_s: float = Field(default=5.0, gt=0)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Process environment, then .env, then the keyword arguments (generation-time answers).
        return env_settings, dotenv_settings, init_settings, file_secret_settings

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("service_name")
    @classmethod
    def _service_name(cls, value: str) -> str:
        problem = naming.check("service_name", value)
        if problem:
            raise ValueError(f"SERVICE_NAME {problem}")
        return value

    @field_validator("template_version")
    @classmethod
    def _template_version(cls, value: str) -> str:
        if value and not provenance.VERSION_PATTERN.fullmatch(value):
            raise ValueError(
                "TEMPLATE_VERSION must be a version tag or commit (letters, digits and "
                "'._+-', at most 128 characters), or empty to read it from the answers file"
            )
        return value

    @field_validator("kafka_environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        problem = naming.check("kafka_environment", value)
        if problem:
            raise ValueError(f"KAFKA_ENVIRONMENT {problem}")
        return value

    # -- derived -------------------------------------------------------------

    @property
    def effective_instance_id(self) -> str:
        """INSTANCE_ID, else ``{hostname}-{port}``: unique per host and port, stable across restarts."""
        return self.instance_id or f"{socket.gethostname()}-{self.service_port}"

    @property
    def consumer_group(self) -> str:
        return self.kafka_consumer_group or self.service_name

    @property
    def health_endpoint(self) -> str:
        host = self.service_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.service_port}/health"

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by producers and consumers."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
            "socket.keepalive.enable": True,
            # Reconnect quickly when a broker comes back.
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2_000,
        }
        optional: dict[str, str | None] = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": _secret(self.kafka_sasl_password),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
            "ssl.key.password": _secret(self.kafka_ssl_key_password),
        }
        conf.update({key: value for key, value in optional.items() if value})
        return conf

    def consumer_timings(self) -> dict[str, Any]:
        return {
            "session.timeout.ms": self.kafka_session_timeout_ms,
            "heartbeat.interval.ms": min(
                self.kafka_heartbeat_interval_ms, self.kafka_session_timeout_ms // 3
            ),
            "max.poll.interval.ms": self.kafka_max_poll_interval_ms,
        }


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
