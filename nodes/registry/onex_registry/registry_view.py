"""The registry's view: which nodes should be in Consul, and which must leave it.

Pure (no I/O): events change the view, snapshots of the Consul agent tell it what
Consul holds, and ``RegistryView.plan`` says what to send; the ``Reconciler``
(``reconcile.py``) sends it and reports the outcome back. Failed calls back off
per service here, so a retry is simply a later plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .consul_registry import AgentSnapshot, Registration, RegistrySettings, duration_seconds

#: Heartbeat status -> Consul check status (for TTL checks fed by heartbeats).
HEARTBEAT_TO_CHECK: Final = {"healthy": "passing", "degraded": "warning", "unhealthy": "critical"}


@dataclass
class NodeRecord:
    registration: Registration
    announced_at: float  # the introspection envelope's timestamp (epoch seconds)
    last_seen: float  # when the registry last heard from the node (epoch seconds)
    #: Set when Consul removed the service after its check stayed critical: the node is dead,
    #: so it is not re-registered until it shows a new sign of life.
    reaped_at: float | None = None
    pending_ttl: tuple[str, str] | None = None  # (check status, note) for TTL checks

    @property
    def binding(self) -> tuple[str, str, str | None]:
        """What a node_id stays bound to until it leaves or expires: service, instance, host."""
        reg = self.registration
        return reg.name, reg.meta.get("instance_id", ""), reg.address


@dataclass(frozen=True)
class Removal:
    node_id: str
    service_id: str
    kv_key: str
    requested_at: float  # when the node left (event time)


@dataclass
class _Backoff:
    attempts: int = 0
    next_try: float = 0.0


@dataclass
class Plan:
    register: list[Registration] = field(default_factory=list)
    remove: list[Removal] = field(default_factory=list)
    #: (service_id, check_id, status, note) for TTL checks fed by heartbeats
    ttl: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: registered as critical because /health did not answer yet: probe again
    promote: list[Registration] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.register or self.remove or self.ttl or self.promote)


class RegistryView:
    """Desired state: which nodes should be in Consul, and which must leave it. Pure."""

    def __init__(self, settings: RegistrySettings) -> None:
        self._settings = settings
        self.records: dict[str, NodeRecord] = {}
        self.removals: dict[str, Removal] = {}
        #: Last known agent state, from snapshots and our own successful calls.
        self.observed: dict[str, str] = {}
        self.observed_status: dict[str, str] = {}
        self._backoff: dict[str, _Backoff] = {}
        #: service_id -> first snapshot time its check was seen critical (continuously since).
        self._critical_since: dict[str, float] = {}
        #: service_id -> (give up at, next probe at) for nodes registered before /health was ready.
        self.unconfirmed: dict[str, tuple[float, float]] = {}

    # -- events -------------------------------------------------------------

    def conflict(self, registration: Registration, now: float) -> str:
        """Why ``registration`` may not replace the node_id's current record (``""``: it may).

        A node_id stays bound to its service name, instance and address while its node is
        alive: passing (or warning) in Consul, or, before Consul has judged it, heard from
        within ``node_ttl_s``. After a shutdown or expiry it is free, and also while its check
        is critical (a node rescheduled to another address with the same instance id must be
        able to come back).
        """
        current = self.records.get(registration.node_id)
        if current is None:
            return ""
        status = self.observed_status.get(current.registration.service_id)
        alive = status in ("passing", "warning") or (status is None and self.is_live(current, now))
        if not alive:
            return ""
        new = (registration.name, registration.meta.get("instance_id", ""), registration.address)
        if new == current.binding:
            return ""
        names = ("service_name", "instance_id", "address")
        differs = [
            f"{name} {theirs!r} (bound: {ours!r})"
            for name, theirs, ours in zip(names, new, current.binding, strict=True)
            if theirs != ours
        ]
        return (
            f"node_id {registration.node_id} is bound to another live node; this announcement "
            f"has {', '.join(differs)}; it is accepted once that node shuts down or expires"
        )

    def expire(self, now: float) -> list[NodeRecord]:
        """Forget nodes silent for ``record_ttl_s``: deregister them and delete their
        manifests; returns them (the caller tombstones them on the compacted topic)."""
        ttl = self._settings.record_ttl_s
        expired = [r for r in self.records.values() if now - r.last_seen > ttl]
        for record in expired:
            del self.records[record.registration.node_id]
            self._remove(record.registration, record.announced_at)
        return expired

    def introspection(self, registration: Registration, announced_at: float, now: float) -> None:
        node_id = registration.node_id
        previous = self.records.get(node_id)
        if previous is not None and previous.announced_at > announced_at:
            previous.last_seen = max(previous.last_seen, now)
            return  # an older announcement arriving late changes nothing but liveness
        removal = self.removals.get(node_id)
        if removal is not None:
            if removal.requested_at > announced_at:
                return  # announced before it shut down: stays removed
            if removal.service_id == registration.service_id:
                del self.removals[node_id]  # a new life under the same ID: register instead
        if previous is not None and previous.registration.service_id != registration.service_id:
            self._remove(previous.registration, announced_at)
        self.records[node_id] = NodeRecord(registration, announced_at=announced_at, last_seen=now)
        sid = registration.service_id
        self._backoff.pop(sid, None)
        if (
            registration.uses_http_check
            and self.observed.get(sid) == registration.fingerprint
            and self.observed_status.get(sid, "critical") == "critical"
        ):
            # A node restarted under the same ID: Consul still has it critical and would wait
            # up to a check interval; probe it now and mark it passing once it answers.
            self.unconfirmed[sid] = (now + self._settings.promote_window_s, now)

    def heartbeat(self, node_id: str, status: str, note: str, now: float) -> bool:
        """Record a sign of life; False when the node is unknown (ask it to announce)."""
        record = self.records.get(node_id)
        if record is None:
            return False
        record.last_seen = now
        record.reaped_at = None
        if not record.registration.uses_http_check:
            record.pending_ttl = (HEARTBEAT_TO_CHECK.get(status, "critical"), note)
        return True

    def shutdown(self, node_id: str, sent_at: float) -> bool:
        """A node said goodbye at ``sent_at``; ignored if it announced itself again since."""
        record = self.records.get(node_id)
        if record is None or record.announced_at > sent_at:
            return False
        del self.records[node_id]
        self._remove(record.registration, sent_at)
        return True

    def tombstone(
        self, node_id: str, written_at: float, expired_announced_at: float | None = None
    ) -> bool:
        """The compacted topic's latest word on ``node_id`` is 'gone' (a tombstone written at
        ``written_at``): it follows every announcement before it in the same partition.

        ``expired_announced_at`` marks the registry's own expiry tombstone: it removes only the
        record it expired, not a newer announcement that arrived meanwhile."""
        record = self.records.get(node_id)
        if record is None:
            return False
        if expired_announced_at is not None and record.announced_at > expired_announced_at:
            return False
        del self.records[node_id]
        self._remove(record.registration, max(written_at, record.announced_at))
        return True

    def _remove(self, registration: Registration, at: float) -> None:
        """Owe Consul a deregistration; ``at`` is when the node left (event time)."""
        self.removals[registration.node_id] = Removal(
            registration.node_id, registration.service_id, registration.kv_key, at
        )
        self._backoff.pop(registration.service_id, None)

    # -- Consul state ---------------------------------------------------------

    def observe(self, snapshot: AgentSnapshot, now: float) -> list[str]:
        """Take the agent's state; return the node_ids Consul reaped since last time.

        A service that vanished after its check was seen critical for a good part of
        DeregisterCriticalServiceAfter was removed by Consul on purpose (its node is dead);
        one that vanished otherwise was lost (agent restart) and is registered again.
        """
        # Half the setting: the registry sees a check turn critical a poll later than Consul
        # does, and an agent restart while a node was critical that long loses a node that
        # is dead anyway (a live one heartbeats and is registered again).
        reap_after = duration_seconds(self._settings.deregister_after) / 2
        reaped: list[str] = []
        for node_id, record in self.records.items():
            sid = record.registration.service_id
            since = self._critical_since.get(sid)
            if (
                sid not in snapshot.fingerprints
                and since is not None
                and now - since >= reap_after
                and record.reaped_at is None
            ):
                record.reaped_at = now
                reaped.append(node_id)
        self.observed = dict(snapshot.fingerprints)
        self.observed_status = dict(snapshot.check_status)
        for sid in list(self.unconfirmed):
            if snapshot.check_status.get(sid, "critical") != "critical":
                del self.unconfirmed[sid]  # Consul's own check got there first
        self._critical_since = {
            sid: self._critical_since.get(sid, now)
            for sid, status in snapshot.check_status.items()
            if status == "critical"
        }
        return reaped

    def is_live(self, record: NodeRecord, now: float) -> bool:
        return record.reaped_at is None and now - record.last_seen <= self._settings.node_ttl_s

    def plan(self, now: float) -> Plan:
        plan = Plan()
        for record in self.records.values():
            reg = record.registration
            if not self._due(reg.service_id, now):
                continue
            if self.observed.get(reg.service_id) != reg.fingerprint:
                if self.is_live(record, now):
                    plan.register.append(reg)
            elif record.pending_ttl is not None:
                status, note = record.pending_ttl
                plan.ttl.append((reg.service_id, reg.check_id, status, note))
            elif reg.service_id in self.unconfirmed:
                give_up, next_probe = self.unconfirmed[reg.service_id]
                if now >= give_up:
                    del self.unconfirmed[reg.service_id]
                elif now >= next_probe:
                    plan.promote.append(reg)
        plan.remove = [r for r in self.removals.values() if self._due(r.service_id, now)]
        return plan

    def _due(self, key: str, now: float) -> bool:
        backoff = self._backoff.get(key)
        return backoff is None or backoff.next_try <= now

    # -- outcomes -------------------------------------------------------------

    def registered(self, registration: Registration, status: str, now: float = 0.0) -> None:
        sid = registration.service_id
        self.observed[sid] = registration.fingerprint
        self.observed_status[sid] = status
        self._backoff.pop(sid, None)
        if status == "critical" and registration.uses_http_check:
            if sid not in self.unconfirmed:
                self.unconfirmed[sid] = (now + self._settings.promote_window_s, now)
        else:
            self.unconfirmed.pop(sid, None)

    def still_unhealthy(self, registration: Registration, now: float) -> None:
        """A promotion probe failed: try again after ``promote_interval_s``."""
        entry = self.unconfirmed.get(registration.service_id)
        if entry is not None:
            self.unconfirmed[registration.service_id] = (
                entry[0],
                now + self._settings.promote_interval_s,
            )

    def next_probe_in(self, now: float) -> float | None:
        """Seconds until the earliest promotion probe is due, if any."""
        if not self.unconfirmed:
            return None
        return max(0.0, min(n for _, n in self.unconfirmed.values()) - now)

    def removed(self, removal: Removal) -> None:
        current = self.removals.get(removal.node_id)
        if current == removal:
            del self.removals[removal.node_id]
        self.observed.pop(removal.service_id, None)
        self.observed_status.pop(removal.service_id, None)
        self.unconfirmed.pop(removal.service_id, None)
        self._backoff.pop(removal.service_id, None)

    def refused(self, registration: Registration) -> bool:
        """Consul refused ``registration`` itself: drop the record (and what Consul holds of
        it), so it blocks nothing; True when the record was still current."""
        record = self.records.get(registration.node_id)
        if record is None or record.registration is not registration:
            return False
        del self.records[registration.node_id]
        self._remove(registration, record.announced_at)
        return True

    def ttl_sent(self, check_id: str, status: str) -> None:
        for record in self.records.values():
            if record.registration.check_id == check_id:
                record.pending_ttl = None
                self.observed_status[record.registration.service_id] = status

    def failed(self, key: str, now: float) -> float:
        """Back off ``key`` (a service ID) exponentially; returns the delay chosen."""
        backoff = self._backoff.setdefault(key, _Backoff())
        backoff.attempts += 1
        delay = retry_delay(backoff.attempts, self._settings)
        backoff.next_try = now + delay
        return delay


def retry_delay(attempts: int, settings: RegistrySettings) -> float:
    """Exponential backoff: base, 2x base, 4x base ... capped at ``retry_max_s``."""
    exponent = min(max(attempts - 1, 0), 30)
    return float(min(settings.retry_base_s * (2**exponent), settings.retry_max_s))
