"""Rolling restarts of the pipeline's stage nodes (`onex-node dev restart pipeline --rolling`).

One stage at a time: a new instance starts beside the old one (its own port and instance
id), and the old one is stopped only once the new one is ready on `/health`, passing in
Consul and a member of the stage's consumer group. Requests in flight keep moving: the old
instance finishes and commits what it handled before it leaves the group, and the stages
are idempotent per request, so a record handed over twice is answered once.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from onex_scaffold.devstack.errors import ServiceStartError

#: How often the waits below ask again.
_POLL_S = 0.25


def _deadline_loop(what: str, timeout_s: float, check: Callable[[], str | None]) -> None:
    """Call ``check`` until it returns None; raise with its last reason after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    reason: str | None = "not checked"
    while time.monotonic() < deadline:
        reason = check()
        if reason is None:
            return
        time.sleep(_POLL_S)
    raise ServiceStartError(f"{what} within {timeout_s:g} s: {reason}")


def passing_in_consul(consul_addr: str, service: str, instance_id: str) -> str | None:
    """None when Consul has a passing instance of ``service`` with Meta ``instance_id``."""
    base = consul_addr if "://" in consul_addr else f"http://{consul_addr}"
    url = (
        f"{base.rstrip('/')}/v1/health/service/{urllib.parse.quote(service, safe='')}?passing=true"
    )
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            entries: list[dict[str, Any]] = json.loads(response.read())
    except (OSError, ValueError) as error:
        return f"Consul did not answer ({error})"
    for entry in entries:
        meta = (entry.get("Service") or {}).get("Meta") or {}
        if meta.get("instance_id") == instance_id:
            return None
    return f"no passing instance {instance_id} of {service} in Consul yet"


class ConsumerGroup:
    """Members of one consumer group, as the broker describes them (one admin client)."""

    def __init__(self, bootstrap_servers: str, group: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.group = group
        self._admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 3})

    def members(self) -> tuple[int, str]:
        """(members, state); (0, 'UNKNOWN') when it cannot be described right now."""
        try:
            futures = self._admin.describe_consumer_groups([self.group], request_timeout=5)
            description = futures[self.group].result()
        except Exception:  # a group that does not exist yet, a broker election: ask again
            return 0, "UNKNOWN"
        state = description.state
        return len(description.members), str(getattr(state, "name", state)).upper()

    def reports_members(self) -> bool:
        """False for a broker that describes an active (stable) group with no members: Tansu
        0.6 does, so joining cannot be observed there."""
        members, state = self.members()
        return not (members == 0 and state == "STABLE")

    def wait_joined(self, at_least: int, timeout_s: float) -> None:
        """Until the group has ``at_least`` members and is stable."""

        def check() -> str | None:
            members, state = self.members()
            if members >= at_least and state == "STABLE":
                return None
            return f"{members} member(s), {state}; waiting for {at_least}"

        _deadline_loop(f"the new instance did not join {self.group}", timeout_s, check)


def wait_passing(consul_addr: str, service: str, instance_id: str, timeout_s: float) -> None:
    _deadline_loop(
        f"{service} instance {instance_id} was not passing in Consul",
        timeout_s,
        lambda: passing_in_consul(consul_addr, service, instance_id),
    )
