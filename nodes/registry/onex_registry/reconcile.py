"""The loop that makes the Consul agent match the registry's view of live nodes.

Level-triggered on purpose: events only change the view (``RegistryView``, in
``registry_view.py``, importable from here as well); the
``Reconciler`` compares the view with what the Consul agent holds and sends the
difference. So the same event twice is one registration, a Consul agent that
lost its state is refilled on the next comparison, and a call that failed
because Consul was down is simply still in the difference next time: nothing is
dropped, and retries back off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .consul_registry import (
    TXN_MAX_OPS,
    AgentSnapshot,
    ConsulAgent,
    ConsulRefusedError,
    ConsulUnavailableError,
    Registration,
    RegistrySettings,
    probe_health,
)
from .registry_view import (
    HEARTBEAT_TO_CHECK,
    NodeRecord,
    Plan,
    RegistryView,
    Removal,
    retry_delay,
)

__all__ = [
    "HEARTBEAT_TO_CHECK",
    "NodeRecord",
    "Plan",
    "Reconciler",
    "ReconcilerStats",
    "RegistryView",
    "Removal",
    "manifest_batches",
    "retry_delay",
    "txn_cost",
]

log = logging.getLogger(__name__)


def txn_cost(registration: Registration) -> int:
    """Bytes a manifest adds to a /v1/txn request body: base64 value, key, JSON around it."""
    return 4 * ((len(registration.manifest.encode()) + 2) // 3) + len(registration.kv_key) + 64


def manifest_batches(registrations: list[Registration], max_bytes: int) -> list[list[Registration]]:
    """Consecutive batches of at most ``TXN_MAX_OPS`` manifests and ``max_bytes`` of request
    body (one manifest over the limit travels alone: Consul refuses it, and it alone)."""
    batches: list[list[Registration]] = []
    current: list[Registration] = []
    size = 0
    for registration in registrations:
        cost = txn_cost(registration)
        if current and (len(current) >= TXN_MAX_OPS or size + cost > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(registration)
        size += cost
    if current:
        batches.append(current)
    return batches


@dataclass
class ReconcilerStats:
    registrations: int = 0
    deregistrations: int = 0
    failures: int = 0
    refused: int = 0
    consul_reachable: bool = False
    last_error: str = ""


class Reconciler:
    """Runs the view against the Consul agent until cancelled."""

    def __init__(
        self,
        view: RegistryView,
        agent: ConsulAgent,
        settings: RegistrySettings,
        clock: Callable[[], float],
    ) -> None:
        self.view = view
        self._agent = agent
        self._settings = settings
        self._clock = clock
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.consul_concurrency, thread_name_prefix="consul"
        )
        self.stats = ReconcilerStats()
        self._snapshot_failures = 0
        self.snapshot_taken = asyncio.Event()
        #: Told (reachable, last error) whenever Consul starts or stops answering.
        self.on_consul_state: Callable[[bool, str], None] | None = None
        #: Told (registration, Consul's answer) when Consul refuses a record itself; the
        #: service dead-letters it.
        self.on_refused: Callable[[Registration, str], Awaitable[None]] | None = None

    def _set_reachable(self, reachable: bool, error: str) -> None:
        changed = reachable != self.stats.consul_reachable or not self.snapshot_taken.is_set()
        self.stats.consul_reachable = reachable
        if changed and self.on_consul_state is not None:
            self.on_consul_state(reachable, error)

    def wake(self) -> None:
        self._wake.set()

    async def _in_thread(self, fn: Callable[[], object]) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self) -> None:
        last_snapshot = -math.inf
        try:
            while True:
                now = self._clock()
                if now - last_snapshot >= self._settings.reconcile_interval_s:
                    if not await self._take_snapshot():
                        await self._sleep(retry_delay(self._snapshot_failures, self._settings))
                        continue
                    last_snapshot = self._clock()
                plan = self.view.plan(self._clock())
                if plan.register or plan.remove or plan.ttl:
                    await self._execute(plan)
                    continue  # more may have arrived meanwhile
                if plan.promote:
                    await self._execute(plan)
                wait = self._settings.reconcile_interval_s
                next_probe = self.view.next_probe_in(self._clock())
                if next_probe is not None:
                    wait = min(wait, max(next_probe, 0.01))
                await self._sleep(wait)
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()

    async def _take_snapshot(self) -> bool:
        try:
            snapshot = await self._in_thread(self._agent.snapshot)
        except ConsulUnavailableError as error:
            self._snapshot_failures += 1
            self._unreachable(str(error))
            return False
        assert isinstance(snapshot, AgentSnapshot)
        self._snapshot_failures = 0
        self._set_reachable(True, "")
        reaped = self.view.observe(snapshot, self._clock())
        for node_id in reaped:
            log.info("Consul removed node %s after its check stayed critical", node_id)
        self.snapshot_taken.set()
        return True

    def _unreachable(self, error: str) -> None:
        if self.stats.consul_reachable or error != self.stats.last_error:
            log.warning("%s; retrying with backoff, nothing is dropped", error)
        self.stats.last_error = error
        self._set_reachable(False, error)
        self.stats.failures += 1

    async def _execute(self, plan: Plan) -> None:
        # The KV manifest first, in transactions of up to 64 keys (half the calls of a burst
        # of announcements), then the service, one call each, in parallel: whoever finds a
        # service in Consul finds its manifest at Meta.manifest_key. Leaving goes the other
        # way: the service first, then its manifest.
        _, removed, _ = await asyncio.gather(
            self._register_all(plan.register),
            asyncio.gather(*(self._remove(removal) for removal in plan.remove)),
            asyncio.gather(
                *(self._ttl(*item) for item in plan.ttl),
                *(self._promote(reg) for reg in plan.promote),
            ),
        )
        gone = [r for r, ok in zip(plan.remove, removed, strict=True) if ok]
        await asyncio.gather(
            *(
                self._delete_manifests(gone[i : i + TXN_MAX_OPS])
                for i in range(0, len(gone), TXN_MAX_OPS)
            ),
        )

    async def _register_all(self, registrations: list[Registration]) -> None:
        batches = manifest_batches(registrations, self._settings.txn_max_bytes)
        written = await asyncio.gather(*(self._write_manifests(batch) for batch in batches))
        ready = [reg for batch in written for reg in batch]
        statuses = await asyncio.gather(*(self._register(reg) for reg in ready))
        now = self._clock()
        for reg, status in zip(ready, statuses, strict=True):
            if status is None:
                continue  # Consul failed: the reconciler retries it with backoff
            self.view.registered(reg, status, now)
            self.stats.registrations += 1
            log.info("registered %s (%s)", reg.service_id, status)

    async def _write_manifests(self, batch: list[Registration]) -> list[Registration]:
        """Write the batch's manifests; the registrations written (none when Consul failed)."""
        items = [(reg.kv_key, reg.manifest) for reg in batch]
        try:
            await self._in_thread(lambda: self._agent.write_manifests(items))
        except ConsulRefusedError as error:
            if len(batch) == 1:
                await self._refused(batch[0], str(error))
                return []
            # One of them is refused: write each alone, so only that one is isolated.
            alone = await asyncio.gather(*(self._write_manifests([reg]) for reg in batch))
            return [reg for written in alone for reg in written]
        except ConsulUnavailableError as error:
            delay = 0.0
            for reg in batch:
                delay = self.view.failed(reg.service_id, self._clock())
            self._unreachable(f"{error} (retry in {delay:.1f}s)")
            return []
        return batch

    async def _delete_manifests(self, batch: list[Removal]) -> None:
        keys = [removal.kv_key for removal in batch]
        try:
            await self._in_thread(lambda: self._agent.delete_manifests(keys))
        except ConsulUnavailableError as error:
            delay = 0.0
            for removal in batch:
                delay = self.view.failed(removal.service_id, self._clock())
            self._unreachable(f"{error} (retry in {delay:.1f}s)")
            return
        for removal in batch:
            self.view.removed(removal)
            self.stats.deregistrations += 1
            log.info("deregistered %s", removal.service_id)

    async def _promote(self, registration: Registration) -> None:
        endpoint = registration.health_endpoint
        assert endpoint is not None
        timeout = self._settings.probe_timeout_s

        def call() -> bool:
            if not probe_health(endpoint, timeout):
                return False
            self._agent.register(registration, "passing")
            return True

        try:
            promoted = await self._in_thread(call)
        except ConsulUnavailableError as error:
            self._unreachable(str(error))
            self.view.still_unhealthy(registration, self._clock())
            return
        if promoted:
            self.view.registered(registration, "passing", self._clock())
            log.info("%s answers on /health: passing", registration.service_id)
        else:
            self.view.still_unhealthy(registration, self._clock())

    async def _register(self, registration: Registration) -> str | None:
        """Probe and register the service; the status given, or None when Consul failed."""
        settings = self._settings

        def call() -> str:
            if registration.health_endpoint is None:
                status = "passing"  # it has just announced itself; heartbeats keep it so
            elif settings.initial_probe:
                healthy = probe_health(registration.health_endpoint, settings.probe_timeout_s)
                status = "passing" if healthy else "critical"
            else:
                status = "critical"  # Consul's own default until the first check runs
            self._agent.register(registration, status)
            return status

        try:
            status = await self._in_thread(call)
        except ConsulRefusedError as error:
            await self._refused(registration, str(error))
            return None
        except ConsulUnavailableError as error:
            delay = self.view.failed(registration.service_id, self._clock())
            self._unreachable(f"{error} (retry in {delay:.1f}s)")
            return None
        assert isinstance(status, str)
        return status

    async def _refused(self, registration: Registration, reason: str) -> None:
        if not self.view.refused(registration):
            return
        self.stats.refused += 1
        log.warning("Consul refused %s: %s", registration.service_id, reason)
        if self.on_refused is not None:
            try:
                await self.on_refused(registration, reason)
            except Exception:  # dead-lettering is best effort; the record is isolated anyway
                log.exception("could not dead-letter the refused record %s", registration.node_id)

    async def _remove(self, removal: Removal) -> bool:
        """Deregister the service (its manifest goes next); False when Consul failed."""
        try:
            await self._in_thread(lambda: self._agent.deregister(removal.service_id))
        except ConsulUnavailableError as error:
            delay = self.view.failed(removal.service_id, self._clock())
            self._unreachable(f"{error} (retry in {delay:.1f}s)")
            return False
        return True

    async def _ttl(self, service_id: str, check_id: str, status: str, note: str) -> None:
        try:
            await self._in_thread(lambda: self._agent.ttl_update(check_id, status, note))
        except ConsulUnavailableError as error:
            delay = self.view.failed(service_id, self._clock())
            self._unreachable(f"{error} (retry in {delay:.1f}s)")
            return
        self.view.ttl_sent(check_id, status)
