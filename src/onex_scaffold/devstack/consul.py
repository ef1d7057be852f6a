"""A real Consul agent in -dev mode on loopback.

The binary comes from `CONSUL_BIN`, else `consul` on PATH, else the cache, else it is built once
from source through the Go module proxy with the wrapper module in resources/consul. Consul
1.14.11 is MPL-2.0 and, unlike 1.15/1.16, needs neither `github.com/hashicorp/consul/
envoyextensions` nor `.../troubleshoot`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar

from onex_scaffold.devstack import procs, tools
from onex_scaffold.devstack.base import LaunchPlan, Service, StartContext
from onex_scaffold.devstack.errors import MissingToolError, ServiceStartError
from onex_scaffold.devstack.layout import CONSUL_AGENT, member_name
from onex_scaffold.devstack.ports import choose_port
from onex_scaffold.devstack.state import CreatedFolders, ServiceRecord

CONSUL_VERSION = "1.14.11"
CONSUL_MODULE = "github.com/hashicorp/consul"
CONSUL_VAR = "CONSUL_HTTP_ADDR"
# Modules that must never enter the build (not open-source licensed as served).
FORBIDDEN_MODULES = (
    "github.com/hashicorp/consul/envoyextensions",
    "github.com/hashicorp/consul/troubleshoot",
)


def consul_http_url(address: str) -> str:
    """CONSUL_HTTP_ADDR ('127.0.0.1:8500' or 'http://...') -> base URL."""
    return address if "://" in address else f"http://{address}"


def probe_consul(address: str) -> str | None:
    """None when the agent at `address` reports a raft leader."""
    url = consul_http_url(address).rstrip("/") + "/v1/status/leader"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            leader = json.loads(response.read() or b'""')
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"GET {url} failed: {error}"
    if not leader:
        return f"GET {url}: no leader yet"
    return None


def cached_binary() -> Path:
    return tools.cache_dir("consul", CONSUL_VERSION, "consul")


def find_consul() -> Path | None:
    """CONSUL_BIN, then `consul` on PATH, then the cached build."""
    explicit = os.environ.get("CONSUL_BIN")
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise MissingToolError(
                f"CONSUL_BIN={explicit} is not an executable file; fix or unset it"
            )
        return path
    on_path = shutil.which("consul")
    if on_path:
        return Path(on_path)
    cached = cached_binary()
    return cached if cached.is_file() else None


def build_consul(log_path: Path, log: Callable[[str], None] | None = None) -> Path:
    """Build Consul from source into the cache (several minutes the first time)."""
    go = tools.require(
        "go",
        "install Go 1.24+ to build Consul once, or point CONSUL_BIN at a consul binary",
    )
    target = cached_binary()
    work = target.parent / "build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in ("go.mod", "go.sum"):
        shutil.copy(tools.RESOURCES / "consul" / name, work / name)
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    if log is not None:
        log(f"consul: building Consul {CONSUL_VERSION} from source (first time only; minutes)")
    started = time.monotonic()
    with log_path.open("w") as out:
        result = subprocess.run(
            [go, "build", "-p", str(os.cpu_count() or 2), "-trimpath", "-ldflags=-s -w",
             "-o", str(work / "consul"), CONSUL_MODULE],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
        out.write(f"build took {time.monotonic() - started:.0f} s, exit {result.returncode}\n")
    if result.returncode != 0:
        raise ServiceStartError(
            f"consul: building {CONSUL_MODULE}@v{CONSUL_VERSION} failed "
            f"(exit {result.returncode}); see {log_path}"
        )
    os.replace(work / "consul", target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def binary_version(binary: Path) -> str:
    """'1.14.11' from `consul version`."""
    out = subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"Consul v(\S+)", out.stdout)
    return match.group(1) if match else "unknown"


def _loopback_agent_flags(ports: Mapping[str, int]) -> list[str]:
    """What every agent of the stack shares: loopback only, no DNS or gRPC listeners, and its
    own HTTP, Serf and server ports (several stacks can run side by side)."""
    return [
        "-bind", "127.0.0.1", "-client", "127.0.0.1",
        "-http-port", str(ports["http"]), "-dns-port", "-1",
        "-grpc-port", "-1", "-grpc-tls-port", "-1",
        "-log-level", "info",
        "-serf-lan-port", str(ports["serf_lan"]),
        "-serf-wan-port", str(ports["serf_wan"]),
        "-server-port", str(ports["server"]),
    ]  # fmt: skip


class ConsulService(Service):
    """`consul agent -dev` on loopback; in memory, so it forgets everything when it stops."""

    name = "consul"
    external_var = CONSUL_VAR
    start_timeout_s = 60.0

    def __init__(
        self, port: int | None = None, cluster: ConsulCluster | None = None, index: int = 1
    ) -> None:
        self.port = port
        # cluster None: one `-dev` agent (in memory). Otherwise index 1..n is a server and
        # index 0 the client agent that nodes and the registry talk to.
        self.cluster = cluster
        self.index = index
        self._binary: Path | None = None
        self._version = "unknown"

    def prepare(self, ctx: StartContext) -> None:
        binary = find_consul()
        if binary is None:
            with tools.cache_lock(cached_binary().parent):
                binary = find_consul() or build_consul(ctx.log_dir / "consul-build.log", ctx.log)
        self._binary = binary
        self._version = binary_version(binary)

    def plan(self, ctx: StartContext) -> LaunchPlan:
        assert self._binary is not None, "prepare() first"
        if self.cluster is not None:
            return self._plan_member(ctx, self.cluster)
        previous = ctx.previous.ports if ctx.previous else {}
        ports: dict[str, int] = {}
        ports["http"] = choose_port(
            "consul", self.port, previous.get("http"), ctx.used_ports, "--consul-port"
        )
        ctx.used_ports.add(ports["http"])
        # Serf and server RPC ports must differ per agent so several stacks can coexist.
        for key in ("serf_lan", "serf_wan", "server"):
            ports[key] = choose_port("consul", None, previous.get(key), ctx.used_ports, "")
            ctx.used_ports.add(ports[key])
        address = f"127.0.0.1:{ports['http']}"
        return LaunchPlan(
            argv=[
                str(self._binary), "agent", "-dev", "-ui", "-node", "onex-dev",
                *_loopback_agent_flags(ports),
                # Never call home for update checks: loopback only.
                "-hcl", "disable_update_check = true",
            ],
            ports=ports,
            provides={CONSUL_VAR: address},
            version=self._version,
            kind="consul",
            cwd=ctx.dev_dir,
            env=dict(os.environ, CHECKPOINT_DISABLE="1"),
        )  # fmt: skip

    def _plan_member(self, ctx: StartContext, cluster: ConsulCluster) -> LaunchPlan:
        assert self._binary is not None
        all_ports = cluster.ports(ctx)
        ports = all_ports[self.index]
        ctx.used_ports |= set(ports.values())
        member = cluster.member(self.index)
        data = cluster.data_dir(ctx) / member
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        joins: list[str] = []
        for index in range(1, cluster.size + 1):
            if index != self.index:
                joins += ["-retry-join", f"127.0.0.1:{all_ports[index]['serf_lan']}"]
        argv = [
            str(self._binary), "agent", "-node", f"onex-dev-{member}",
            "-data-dir", str(data),
            *_loopback_agent_flags(ports),
            *joins,
            "-retry-interval", "1s",
            "-hcl", "disable_update_check = true",
            # Elections in about a second, as on a fast production network (the default
            # multiplier 5 suits slow shared machines; here it only slows failover down).
            "-hcl", "performance { raft_multiplier = 1 }",
        ]  # fmt: skip
        if self.index > 0:
            argv += ["-server", "-bootstrap-expect", str(cluster.size)]
            kind = "consul-server"
            provides: dict[str, str] = {}
        else:
            argv += ["-ui"]
            kind = "consul-agent"
            provides = {CONSUL_VAR: f"127.0.0.1:{ports['http']}"}
        return LaunchPlan(
            argv=argv,
            ports=dict(ports),
            provides=provides,
            version=self._version,
            kind=kind,
            cwd=ctx.dev_dir,
            env=dict(os.environ, CHECKPOINT_DISABLE="1"),
        )

    def probe(self, record: ServiceRecord) -> str | None:
        if "http" in record.ports and CONSUL_VAR not in record.env:
            return probe_consul(f"127.0.0.1:{record.ports['http']}")  # a server: itself
        return probe_consul(record.env[CONSUL_VAR])


class ConsulCluster:
    """What the Consul servers and the client agent of one stack share: ports, data folder.

    Servers keep their raft data in .onex-dev/consul/<member> while any member runs, so a
    stopped server rejoins with its state; a cluster started from nothing starts from empty
    folders (like the single `-dev` agent, it forgets everything when the whole stack stops).
    """

    KEYS: ClassVar[tuple[str, ...]] = ("http", "serf_lan", "serf_wan", "server")

    def __init__(self, size: int, agent_port: int | None = None) -> None:
        self.size = size
        self.agent_port = agent_port
        self._ports: dict[int, dict[str, int]] | None = None
        self._data: Path | None = None

    def member(self, index: int) -> str:
        return CONSUL_AGENT if index == 0 else member_name("consul", index, self.size)

    def indexes(self) -> list[int]:
        return [*range(1, self.size + 1), 0]

    def _running(self, ctx: StartContext) -> list[int]:
        running: list[int] = []
        for index in self.indexes():
            record = ctx.records.get(self.member(index))
            if record is not None and procs.recorded_alive(record.pid, record.start_ticks):
                running.append(index)
        return running

    def data_dir(self, ctx: StartContext) -> Path:
        if self._data is None:
            folder = ctx.dev_dir / "consul"
            if not self._running(ctx) and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)  # a new cluster: no raft state of an earlier one
            elif folder.is_symlink():
                folder.unlink()
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            CreatedFolders(ctx.dev_dir).add(folder, os.geteuid())
            self._data = folder
        return self._data

    def ports(self, ctx: StartContext) -> dict[int, dict[str, int]]:
        """member index (0 = client agent) -> its ports, chosen once per `up`."""
        if self._ports is not None:
            return self._ports
        running = set(self._running(ctx))
        records = {i: ctx.records.get(self.member(i)) for i in self.indexes()}
        ours = {p for r in records.values() if r is not None for p in r.ports.values()}
        avoid = set(ctx.used_ports) - ours
        chosen: dict[int, dict[str, int]] = {}
        for index, record in records.items():
            previous = record.ports if record is not None else {}
            if index in running and previous:
                chosen[index] = dict(previous)
                avoid |= set(previous.values())
                continue
            ports: dict[str, int] = {}
            for key in self.KEYS:
                wanted = self.agent_port if index == 0 and key == "http" else None
                option = "--consul-port" if wanted else ""
                ports[key] = choose_port("consul", wanted, previous.get(key), avoid, option)
                avoid.add(ports[key])
            chosen[index] = ports
        self._ports = chosen
        return chosen


def consul_leader(address: str, timeout_s: float = 2.0) -> str | None:
    """The raft leader's server address ('127.0.0.1:8300') as the agent at `address` sees it."""
    url = consul_http_url(address).rstrip("/") + "/v1/status/leader"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            leader = json.loads(response.read() or b'""')
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return str(leader) if leader else None
