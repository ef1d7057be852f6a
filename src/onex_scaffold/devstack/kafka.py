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

from onex_scaffold.devstack import procs, tools
from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.errors import ServiceStartError
from onex_scaffold.devstack.layout import member_name
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.state import ServiceRecord

KAFKA_VERSION = os.environ.get("ONEX_KAFKA_VERSION", "4.1.1")
KAFKA_VAR = "KAFKA_BOOTSTRAP_SERVERS"
# Seconds the probe's AdminClient waits for metadata.
_PROBE_TIMEOUT_S = 3.0


def probe_kafka(
    bootstrap: str, timeout_s: float = _PROBE_TIMEOUT_S, broker_id: int | None = None
) -> str | None:
    """None when a broker at `bootstrap` returns cluster metadata with at least one broker
    (with `broker_id`: that broker answers and is a live, unfenced member of its cluster)."""
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
    if broker_id is not None and broker_id not in metadata.brokers:
        return f"broker {broker_id} is not among the live brokers {sorted(metadata.brokers)}"
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


#: Topic settings of the clustered stack: what `.onex-dev/env` tells nodes to create topics with.
REPLICATION_VAR = "KAFKA_TOPIC_REPLICATION_FACTOR"
MIN_INSYNC_VAR = "KAFKA_TOPIC_MIN_INSYNC_REPLICAS"


def replication_for(size: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) a cluster of `size` brokers can hold.

    Three copies and two in sync survive one broker down without losing acknowledged writes
    and without refusing writes (acks=all); one broker can only hold one copy.
    """
    return min(3, size), min(2, size)


def server_properties(
    data_dir: Path,
    port: int,
    controller_port: int,
    node_id: int = 1,
    voters: dict[int, int] | None = None,
) -> str:
    """server.properties of one KRaft broker+controller (`voters`: node id -> controller port)."""
    voters = voters or {node_id: controller_port}
    replicas, min_insync = replication_for(len(voters))
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        # Static quorum: every voter and its address, the same on every member.
        "controller.quorum.voters": ",".join(
            f"{voter}@127.0.0.1:{cport}" for voter, cport in sorted(voters.items())
        ),
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # Internal topics and topics created with the broker's defaults (replication factor
        # -1, auto-creation) get as many copies as the cluster can hold.
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_insync),
        "offsets.topic.replication.factor": str(replicas),
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_insync),
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_insync),
        # First consumer group join answers at once instead of after 3 s.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        # The registry snapshot topic is compacted.
        "log.cleaner.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    if len(voters) > 1:
        settings.update(
            {
                # A development machine: few threads per broker (three brokers share 2 cores).
                "num.network.threads": "2",
                "num.io.threads": "2",
                "background.threads": "2",
                "num.replica.fetchers": "1",
                "log.cleaner.threads": "1",
                # A killed broker is fenced (and leaves every ISR) after 4 s instead of 9 s, so
                # failover shows within a test; production keeps Kafka's defaults.
                "broker.heartbeat.interval.ms": "500",
                "broker.session.timeout.ms": "4000",
                "replica.lag.time.max.ms": "10000",
                # A broker that restarts takes back the leadership it had (the default, stated).
                "auto.leader.rebalance.enable": "true",
                "leader.imbalance.check.interval.seconds": "30",
            }
        )
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _meta_cluster_id(data_dir: Path) -> str | None:
    try:
        text = (data_dir / "meta.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id" and value.strip():
            return value.strip()
    return None


class KafkaCluster:
    """What the brokers of one KRaft cluster share: everyone's ports and the cluster id.

    One object serves every member started by one `up`; a member started on its own reads its
    peers' ports from their records, so the quorum's addresses never change under it.
    """

    def __init__(self, size: int, first_port: int | None = None) -> None:
        self.size = size
        self.first_port = first_port
        self._ports: dict[int, dict[str, int]] | None = None

    def member(self, index: int) -> str:
        return member_name("kafka", index, self.size)

    def ports(self, ctx: StartContext) -> dict[int, dict[str, int]]:
        """node id -> {"kafka": port, "controller": port}, chosen once per `up`."""
        if self._ports is not None:
            return self._ports
        records = {i: ctx.records.get(self.member(i)) for i in range(1, self.size + 1)}
        ours = {p for r in records.values() if r is not None for p in r.ports.values()}
        avoid = set(ctx.used_ports) - ours
        chosen: dict[int, dict[str, int]] = {}
        for index, record in records.items():
            previous = record.ports if record is not None else {}
            if (
                record is not None
                and procs.recorded_alive(record.pid, record.start_ticks)
                and previous
            ):
                chosen[index] = dict(previous)  # a live peer keeps its addresses
                avoid |= set(previous.values())
                continue
            wanted = self.first_port if index == 1 else None
            broker = choose_port("kafka", wanted, previous.get("kafka"), avoid, "--kafka-port")
            avoid.add(broker)
            controller = choose_port(
                "kafka controller", None, previous.get("controller"), avoid, "--kafka-port"
            )
            avoid.add(controller)
            chosen[index] = {"kafka": broker, "controller": controller}
        self._ports = chosen
        return chosen

    def cluster_id(self, kafka_home: Path) -> str:
        """The id every member is formatted with: from a formatted member, else a new one."""
        id_file = kafka_home / "cluster.id"
        for index in range(1, self.size + 1):
            found = _meta_cluster_id(kafka_home / self.member(index) / "data")
            if found:
                return found
        if id_file.is_file() and id_file.read_text().strip():
            return id_file.read_text().strip()
        kafka_home.mkdir(parents=True, exist_ok=True)
        new = _kafka_uuid()
        id_file.write_text(new + "\n")
        return new


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

    def __init__(
        self,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        cluster: KafkaCluster | None = None,
        index: int = 1,
    ) -> None:
        self.port = port
        self.version = version
        # A single broker is a cluster of one (its folder and name stay `kafka`).
        self.cluster = cluster or KafkaCluster(1, port)
        self.index = index
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
        all_ports = self.cluster.ports(ctx)
        ports = all_ports[self.index]
        ctx.used_ports |= set(ports.values())
        size = self.cluster.size
        kafka_home = ctx.dev_dir / "kafka"
        # One broker keeps the folder layout it always had; members get a folder each.
        home = kafka_home if size == 1 else kafka_home / self.cluster.member(self.index)
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        props = home / "server.properties"
        voters = {i: p["controller"] for i, p in all_ports.items()}
        props.write_text(
            server_properties(data, ports["kafka"], ports["controller"], self.index, voters)
        )
        log4j = home / "log4j2.properties"
        log4j.write_text(LOG4J2)
        # lz4-java unpacks its native library into java.io.tmpdir at every start and leaves it
        # there: the broker's own folder, emptied here, keeps /tmp clean.
        scratch = home / "tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        classpath = f"{self._lib}/*"
        if not (data / "meta.properties").is_file():
            cluster_id = self.cluster.cluster_id(kafka_home) if size > 1 else _kafka_uuid()
            self._format(ctx, classpath, props, cluster_id)
        provides = {
            KAFKA_VAR: ",".join(f"127.0.0.1:{p['kafka']}" for _, p in sorted(all_ports.items()))
        }
        if size > 1:
            replicas, min_insync = replication_for(size)
            provides.update({REPLICATION_VAR: str(replicas), MIN_INSYNC_VAR: str(min_insync)})
        # Three brokers on one small machine: smaller heaps (enough for the chaos tests), and
        # the quick C1 compiler only (less compiling while three JVMs start on 2 cores).
        heap = (
            ["-Xms256m", "-Xmx512m"]
            if size == 1
            else ["-Xms64m", "-Xmx256m", "-XX:TieredStopAtLevel=1"]
        )
        return LaunchPlan(
            argv=[
                self._java, *heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={home}",
                f"-Djava.io.tmpdir={scratch}", "-cp", classpath, "kafka.Kafka", str(props),
            ],
            ports=dict(ports),
            provides=provides,
            version=self.version,
            kind="apache-kafka",
            cwd=home,
        )  # fmt: skip

    def _format(self, ctx: StartContext, classpath: str, props: Path, cluster_id: str) -> None:
        """Format the KRaft storage once; later starts reuse the data."""
        log_path = ctx.log_dir / f"{self.cluster.member(self.index)}-format.log"
        with log_path.open("w") as log:
            result = subprocess.run(
                [self._java, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(props)],
                stdout=log, stderr=subprocess.STDOUT, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise ServiceStartError(
                f"kafka: formatting the storage failed (exit {result.returncode}); see {log_path}"
            )

    def _own_address(self, record: ServiceRecord) -> tuple[str, int | None]:
        """This member's own broker (a cluster member must answer itself, not via a peer)."""
        if self.cluster.size == 1 or "kafka" not in record.ports:
            return record.env[KAFKA_VAR], None
        return f"127.0.0.1:{record.ports['kafka']}", self.index

    def probe(self, record: ServiceRecord) -> str | None:
        address, broker_id = self._own_address(record)
        return probe_kafka(address, broker_id=broker_id)

    def probe_before(self, record: ServiceRecord, deadline: float) -> str | None:
        # A metadata request may wait its whole timeout: keep `up --timeout` honest.
        address, broker_id = self._own_address(record)
        return probe_kafka(address, probe_budget(deadline), broker_id)
