"""The environment variables a generated node reads, with defaults and help.

One table for ``.env.template``, the README and the compose fragment, so they
list the same variables. The runtime's ``NodeSettings`` (runtime/config.py) is
the reader; ``tests/template`` checks this table against its fields.
Stdlib only (loaded by path from extensions/context.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def env_vars(answers: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Variables that apply to the node described by ``answers``, in display order.

    Each item: ``name``, ``default`` (the node's own default as text; empty =
    unset), ``help``, ``group``, ``secret`` (never given a value in generated
    files) and ``value``: what ``.env.template`` sets, uncommented, or None to
    list the variable commented out with its default. The design document's
    variables are set (its section 4.1 D); the rest are listed for reference.
    """
    node_type = answers.get("node_type")
    kafka = node_type != "compute" or bool(answers.get("event_bus_enabled", True))
    postgres = bool(
        (node_type == "effect" and answers.get("use_postgres"))
        or (node_type == "reducer" and answers.get("state_backend") == "postgres")
    )
    service = str(answers.get("service_name", ""))
    out: list[dict[str, Any]] = []

    def add(
        group: str,
        name: str,
        default: object,
        help_: str,
        *,
        secret: bool = False,
        value: object = None,
    ) -> None:
        if isinstance(default, bool):
            default = str(default).lower()
        text = "" if default is None else str(default)
        out.append(
            {
                "group": group,
                "name": name,
                "default": text,
                "help": help_,
                "secret": secret,
                "value": None if value is None else (text if value is True else str(value)),
            }
        )

    g = "Identity and HTTP"
    add(
        g,
        "SERVICE_NAME",
        service,
        "Service name (DNS label); Consul service and consumer group",
        value=True,
    )
    add(
        g,
        "SERVICE_VERSION",
        answers.get("version", "0.1.0"),
        "Version announced to the registry",
        value=True,
    )
    add(g, "SERVICE_HOST", "", "Host/IP other services use to reach this node (default: hostname)")
    add(
        g,
        "SERVICE_PORT",
        answers.get("http_port", 8000),
        "Port of /health and /metrics",
        value=True,
    )
    add(g, "SERVICE_BIND_HOST", "0.0.0.0", "Interface the HTTP server listens on")
    add(g, "INSTANCE_ID", "", "Stable instance id (default: <hostname>-<port>)")
    add(
        g,
        "TEMPLATE_VERSION",
        "",
        "Template version announced (default: _commit of .copier-answers.yml)",
    )
    g = "Lifecycle"
    add(g, "LOG_LEVEL", "INFO", "CRITICAL, ERROR, WARNING, INFO or DEBUG", value=True)
    add(
        g,
        "SHUTDOWN_GRACE_S",
        "20.0",
        "Seconds a graceful stop may take; keep below the orchestrator's grace period",
    )
    if kafka:
        add(g, "HEARTBEAT_INTERVAL_S", "30.0", "Seconds between heartbeats")
        g = "Kafka"
        add(
            g,
            "KAFKA_BOOTSTRAP_SERVERS",
            answers.get("kafka_bootstrap_servers", ""),
            "Broker list host:port[,host:port]",
            value=True,
        )
        add(
            g,
            "KAFKA_ENVIRONMENT",
            answers.get("kafka_environment", "dev"),
            "Topic prefix: <env>.omninode_bridge.onex...",
        )
        # The design's group name. Without KAFKA_CONSUMER_GROUP the node falls back to
        # SERVICE_NAME, which nodes generated before kept (a new group re-reads its topics).
        add(
            g,
            "KAFKA_CONSUMER_GROUP",
            "",
            "Consumer group (unset: SERVICE_NAME); the reducer's state is stored per group",
            value=f"{service}_consumers",
        )
        # Not the design's `latest`: a new group would skip every command sent
        # before the node first started (docs/design-deviations.md).
        add(
            g,
            "KAFKA_AUTO_OFFSET_RESET",
            "earliest",
            "Where a new consumer group starts: earliest (nothing sent before the first start"
            " is lost) or latest",
            value=True,
        )
        add(g, "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        add(g, "KAFKA_SASL_MECHANISM", "", "e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
        add(g, "KAFKA_SASL_USERNAME", "", "SASL user")
        add(
            g,
            "KAFKA_SASL_PASSWORD",
            "",
            "SASL password (secret: set it in the deployment, not here)",
            secret=True,
        )
        add(g, "KAFKA_SSL_CA_LOCATION", "", "CA certificate file")
        add(g, "KAFKA_SSL_CERTIFICATE_LOCATION", "", "Client certificate file")
        add(g, "KAFKA_SSL_KEY_LOCATION", "", "Client key file")
        add(g, "KAFKA_SSL_KEY_PASSWORD", "", "Client key password (secret)", secret=True)
        add(
            g,
            "ONEX_DISCOVERY_KEY",
            "",
            "Signs discovery records (HMAC); a registry given it accepts only signed ones (secret)",
            secret=True,
        )
        g = "Kafka client timings"
        add(
            g,
            "KAFKA_SESSION_TIMEOUT_MS",
            45000,
            "Consumer session timeout; small brokers join faster with ~2000",
        )
        add(
            g,
            "KAFKA_HEARTBEAT_INTERVAL_MS",
            3000,
            "Consumer heartbeat (at most a third of the session timeout)",
        )
        add(
            g,
            "KAFKA_MAX_POLL_INTERVAL_MS",
            300000,
            "Longest pause between polls before the group evicts the node",
        )
        add(g, "KAFKA_REQUEST_TIMEOUT_MS", 30000, "Producer request timeout")
        add(g, "KAFKA_DELIVERY_TIMEOUT_MS", 30000, "Producer delivery timeout")
        add(g, "KAFKA_PROBE_INTERVAL_S", "5.0", "Seconds between broker reachability probes")
        add(
            g,
            "KAFKA_CONNECT_WAIT_S",
            "10.0",
            "Seconds to wait for the broker at start before running degraded",
        )
        add(
            g,
            "KAFKA_CREATE_TOPICS",
            True,
            "Create the node's topics at start (false: the cluster's operators create them)",
        )
        add(
            g,
            "KAFKA_TOPIC_REPLICATION_FACTOR",
            0,
            "Replicas of the topics the node creates (0: min(3, brokers))",
        )
        add(
            g,
            "KAFKA_TOPIC_MIN_INSYNC_REPLICAS",
            0,
            "min.insync.replicas of the topics the node creates (0: min(2, replicas - 1), >= 1)",
        )
        g = "Resilience"
        add(g, "PUBLISH_MAX_RETRIES", 3, "Retries of a failed publish")
        add(g, "PUBLISH_BACKOFF_S", "0.5", "First retry delay (doubles each retry)")
        add(g, "PUBLISH_BACKOFF_MAX_S", "10.0", "Longest retry delay")
        add(g, "BREAKER_FAILURE_THRESHOLD", 5, "Consecutive failures that open the circuit breaker")
        add(g, "BREAKER_RESET_S", "30.0", "Seconds before an open breaker tries again")
        add(g, "ENABLE_DLQ", True, "Send undeliverable or unprocessable messages to <topic>.dlq")
        add(
            g,
            "HANDLER_MAX_RETRIES",
            3,
            "Retries of a failing handler before the message goes to the DLQ",
        )
        add(g, "HANDLER_BACKOFF_S", "0.2", "First handler retry delay")
        add(g, "CONSUMER_BATCH_SIZE", 100, "Messages fetched per poll")
    if postgres:
        g = "PostgreSQL"
        add(
            g,
            "DATABASE_URL",
            "",
            "postgresql://USER@HOST:5432/DB (secret when it holds a password)",
            secret=True,
        )
        add(g, "DATABASE_POOL_MIN", 1, "Smallest connection pool")
        add(g, "DATABASE_POOL_MAX", 5, "Largest connection pool")
    if node_type == "reducer":
        g = "Reducer"
        add(
            g,
            "AGGREGATION_WINDOW_S",
            answers.get("aggregation_window_s", 5.0),
            "Seconds events are buffered before each reduction",
        )
        if not postgres:
            add(
                g,
                "REDUCER_STATE_PATH",
                "",
                f"SQLite file for the state (default: data/{service}.sqlite3)",
            )
    return out
