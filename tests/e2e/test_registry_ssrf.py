"""SSRF through health checks: a link-local health endpoint never reaches Consul.

The announcements point at a fake cloud metadata server on 169.254.169.254. Nothing may leave
the machine, even if the registry let them through: the test runs this file as a script inside
a private network namespace (``unshare -n``), brings its loopback up, puts 169.254.169.254 on
it, and starts there its own dev stack (Tansu, Consul, the registry) and the fake metadata
server. Such an address is reachable only inside that namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from onex_scaffold._offsets import end_offsets

REPO = Path(__file__).resolve().parents[2]
SECRET = "AKIAFAKEMETADATASECRET"
METADATA_IP = "169.254.169.254"


def test_link_local_health_endpoints_are_refused_in_a_private_network(tmp_path: Path) -> None:
    import pytest

    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    probe = (
        subprocess.run([unshare, "-n", "true"], capture_output=True, check=False)
        if unshare
        else None
    )
    if unshare is None or ip is None or probe is None or probe.returncode != 0:
        reason = "needs `unshare -n` and `ip` (root or user namespaces) for a private network"
        if os.environ.get("ONEX_E2E_REQUIRED") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CONSUL_"))}
    result = subprocess.run(
        [unshare, "-n", "--", sys.executable, __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
        check=False,
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "all link-local announcements refused" in result.stdout


# -- inside the namespace ------------------------------------------------------------------------


class _Metadata(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = json.dumps({"AccessKeyId": SECRET, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def _read_env(root: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (root / ".onex-dev" / "env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def _wait(what: str, probe: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"{what}: not within {timeout_s:.0f} s")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


def inside(root: Path) -> None:
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "addr", "add", f"{METADATA_IP}/32", "dev", "lo")
    server = ThreadingHTTPServer((METADATA_IP, 80), _Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Reachable here: had the registry let an announcement through, Consul would fetch it.
    assert SECRET in json.dumps(_get(f"http://{METADATA_IP}/latest/meta-data/"))
    _Metadata.hits = 0

    sys.path.insert(0, str(REPO / "nodes" / "registry"))
    from confluent_kafka import Consumer, Producer
    from onex_registry.runtime import naming
    from onex_registry.runtime.events import (
        ModelEventEnvelope,
        ModelEventSource,
        ModelNodeIntrospectionEvent,
    )

    cli = str(Path(sys.executable).parent / "onex-node")
    # The defaults: any address but the refused networks (no allow-list), so what refuses
    # the link-local announcements is the built-in refusal, not the dev stack's loopback list.
    stack_env = {**os.environ, "REGISTRY_ALLOWED_NETWORKS": ""}
    _run(cli, "dev", "--root", str(root), "up", "--kafka", "tansu", env=stack_env)
    try:
        env = _read_env(root)
        consul = env["CONSUL_HTTP_ADDR"].rstrip("/")
        consul = consul if "://" in consul else f"http://{consul}"
        kafka = env["KAFKA_BOOTSTRAP_SERVERS"]
        environment = "dev"
        intro = naming.introspection_topic(environment)
        dlq = naming.dead_letter_topic(intro)
        reader = Consumer(
            {"bootstrap.servers": kafka, "group.id": f"ssrf-{uuid.uuid4().hex[:6]}",
             "session.timeout.ms": 6000}
        )  # fmt: skip
        reader.assign(end_offsets(reader, [dlq]))
        producer = Producer({"bootstrap.servers": kafka})
        spellings = [
            f"http://{METADATA_IP}/latest/meta-data/iam/security-credentials/",
            "http://2852039166/latest/meta-data/",
            "http://0xa9fea9fe/latest/meta-data/",
            "http://0251.0376.0251.0376/latest/meta-data/",
            "http://169.254.43518/latest/meta-data/",
            f"http://[::ffff:{METADATA_IP}]/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
            "http://[fe80::1]/latest/meta-data/",
        ]
        keys: dict[str, str] = {}
        for index, url in enumerate(spellings):
            event = ModelNodeIntrospectionEvent(
                node_id=uuid.uuid4(),
                node_name="Ssrf",
                node_type="effect",
                service_name="ssrf-probe",
                domain="attack",
                version="0.0.1",
                instance_id=f"ssrf-{index}",
                health_endpoint=url,
            )
            value = ModelEventEnvelope(
                event_type=naming.EVENT_NODE_INTROSPECTION,
                source=ModelEventSource(service="attacker", instance_id="x"),
                payload=event.model_dump(mode="json"),
            ).to_bytes()
            producer.produce(intro, value=value, key=str(event.node_id))
            keys[str(event.node_id)] = url
        assert producer.flush(15) == 0
        letters: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while letters.keys() < keys.keys() and time.monotonic() < deadline:
            for message in reader.consume(num_messages=100, timeout=0.2):
                key = (message.key() or b"").decode()
                if message.error() is None and key in keys:
                    letters[key] = json.loads(message.value())["payload"]["error"]
        missing = [keys[k] for k in keys if k not in letters]
        if missing:
            raise SystemExit(f"not dead-lettered: {missing}")
        for key, error in letters.items():
            print(f"{keys[key]} -> {error}")
            if "refused" not in error and "non-standard form" not in error:
                raise SystemExit(f"{keys[key]} dead-lettered for another reason: {error}")
        time.sleep(2)  # let any registration and check run, were there one
        services = _get(f"{consul}/v1/agent/services") or {}
        leaked = [s for s in services.values() if s.get("Service") == "ssrf-probe"]
        checks = json.dumps(_get(f"{consul}/v1/agent/checks") or {})
        if leaked or SECRET in checks or _Metadata.hits:
            raise SystemExit(
                f"SSRF: {len(leaked)} service(s) registered, secret in checks: "
                f"{SECRET in checks}, metadata server hit {_Metadata.hits} times"
            )
        reader.close()
        print(f"all link-local announcements refused ({len(keys)} spellings); metadata hits: 0")
    finally:
        _run(cli, "dev", "--root", str(root), "down")
        server.shutdown()


if __name__ == "__main__":
    inside(Path(sys.argv[1]))
