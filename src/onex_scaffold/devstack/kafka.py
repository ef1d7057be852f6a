"""Apache Kafka 4.x as a single-node KRaft broker+controller on loopback, and the probe that
both it and Tansu answer (cluster metadata through confluent-kafka's AdminClient)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from onex_scaffold.devstack import tools
from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.errors import ServiceStartError
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.state import ServiceRecord

KAFKA_VERSION = os.environ.get("ONEX_KAFKA_VERSION", "4.1.1")
KAFKA_VAR = "KAFKA_BOOTSTRAP_SERVERS"
# Seconds the probe's AdminClient waits for metadata.
_PROBE_TIMEOUT_S = 3.0


def probe_kafka(bootstrap: str, timeout_s: float = _PROBE_TIMEOUT_S) -> str | None:
    """None when a broker at `bootstrap` returns cluster metadata with at least one broker."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": max(int(timeout_s * 1000), 100),
            # Connection-refused noise while the broker boots is expected: keep stderr quiet.
            "log_level": 0,
        }
    )
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as error:
        return f"no metadata from {bootstrap}: {error.args[0]}"
    if not metadata.brokers:
        return f"{bootstrap} answered without brokers"
    return None


def probe_budget(deadline: float) -> float:
    """Seconds a blocking probe may take so that it ends by `deadline` (at least 0.1 s)."""
    return max(0.1, min(_PROBE_TIMEOUT_S, deadline - time.monotonic()))


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """server.properties of a one-node KRaft cluster for development."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # One broker: every internal topic must live with one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # First consumer group join answers at once instead of after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        # The registry snapshot topic is compacted.
        "log.cleaner.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


class KafkaService(Service):
    """Apache Kafka, jars from Maven Central through the packaged pom, cached per version."""

    name = "kafka"
    external_var = KAFKA_VAR
    start_timeout_s = 120.0

    def __init__(self, port: int | None = None, version: str = KAFKA_VERSION) -> None:
        self.port = port
        self.version = version
        self._java = ""
        self._lib: Path | None = None

    def lib_dir(self) -> Path:
        return tools.cache_dir("kafka", self.version, "lib")

    def prepare(self, ctx: StartContext) -> None:
        self._java = tools.java_binary(17)
        lib = self.lib_dir()
        if not (lib / ".complete").is_file():
            with tools.cache_lock(lib.parent):
                if not (lib / ".complete").is_file():  # another `up` may have just done it
                    self._resolve_jars(ctx, lib)
        self._lib = lib

    def _resolve_jars(self, ctx: StartContext, lib: Path) -> None:
        mvn = tools.require("mvn", "install Maven (Debian: apt-get install maven)")
        work = tools.cache_dir("kafka", self.version, "build")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copy(tools.RESOURCES / "kafka" / "pom.xml", work / "pom.xml")
        staging = work / "lib"
        log_path = ctx.log_dir / "kafka-maven.log"
        ctx.log(f"kafka: resolving Apache Kafka {self.version} jars from Maven (first time only)")
        with log_path.open("w") as log:
            result = subprocess.run(
                [mvn, "-B", "-q", "package", f"-Dkafka.version={self.version}",
                 f"-Dkafka.lib={staging}"],
                cwd=work, stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            raise ServiceStartError(
                f"kafka: Maven could not resolve org.apache.kafka:kafka_2.13:{self.version} "
                f"(exit {result.returncode}); see {log_path}"
            )
        (staging / ".complete").write_text(self.version + "\n")
        shutil.rmtree(lib, ignore_errors=True)
        lib.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(lib)
        shutil.rmtree(work, ignore_errors=True)

    def plan(self, ctx: StartContext) -> LaunchPlan:
        assert self._lib is not None, "prepare() first"
        previous = ctx.previous.ports if ctx.previous else {}
        port = choose_port(
            "kafka", self.port, previous.get("kafka"), ctx.used_ports, "--kafka-port"
        )
        ctx.used_ports.add(port)
        controller = choose_port(
            "kafka controller", None, previous.get("controller"), ctx.used_ports, "--kafka-port"
        )
        ctx.used_ports.add(controller)
        home = ctx.dev_dir / "kafka"
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        props.write_text(server_properties(data, port, controller))
        log4j = home / "log4j2.properties"
        log4j.write_text(LOG4J2)
        classpath = f"{self._lib}/*"
        if not (data / "meta.properties").is_file():
            self._format(ctx, classpath, props)
        return LaunchPlan(
            argv=[
                self._java, "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={home}",
                "-cp", classpath, "kafka.Kafka", str(props),
            ],
            ports={"kafka": port, "controller": controller},
            provides={KAFKA_VAR: f"127.0.0.1:{port}"},
            version=self.version,
            kind="apache-kafka",
            cwd=home,
        )  # fmt: skip

    def _format(self, ctx: StartContext, classpath: str, props: Path) -> None:
        """Format the KRaft storage once; later starts reuse the data."""
        log_path = ctx.log_dir / "kafka-format.log"
        with log_path.open("w") as log:
            result = subprocess.run(
                [self._java, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", _kafka_uuid(), "-c", str(props)],
                stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise ServiceStartError(
                f"kafka: formatting the storage failed (exit {result.returncode}); see {log_path}"
            )

    def probe(self, record: ServiceRecord) -> str | None:
        return probe_kafka(record.env[KAFKA_VAR])

    def probe_before(self, record: ServiceRecord, deadline: float) -> str | None:
        # A metadata request may wait its whole timeout: keep `up --timeout` honest.
        return probe_kafka(record.env[KAFKA_VAR], probe_budget(deadline))
