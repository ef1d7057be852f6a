"""The registry's view and reconciler: idempotence, Consul restarts, reaping, retries."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable

import pytest
from onex_registry.consul_registry import (
    AgentSnapshot,
    ConsulUnavailableError,
    Registration,
    RegistrySettings,
    build_registration,
)
from onex_registry.reconcile import Reconciler, RegistryView, retry_delay
from onex_registry.runtime.events import ModelNodeIntrospectionEvent
from registry_fakes import introspection

SETTINGS = RegistrySettings(node_ttl_s=60, retry_base_s=1, retry_max_s=8, consul_http_addr="x:1")


def registration(
    service: str = "postgres-writer", instance: str = "i1", **changes: object
) -> Registration:
    data = introspection(service, instance, **changes)
    return build_registration(ModelNodeIntrospectionEvent.model_validate(data), SETTINGS)


def snapshot(
    view: RegistryView, status: str = "passing", drop: tuple[str, ...] = ()
) -> AgentSnapshot:
    fps = {sid: fp for sid, fp in view.observed.items() if sid not in drop}
    return AgentSnapshot(fingerprints=fps, check_status={sid: status for sid in fps})


def test_same_event_twice_is_one_registration() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, announced_at=10, now=100)
    view.introspection(registration(), announced_at=11, now=101)
    plan = view.plan(now=101)
    assert [r.service_id for r in plan.register] == [reg.service_id]
    view.registered(plan.register[0], "passing")
    view.introspection(registration(), announced_at=12, now=102)
    assert not view.plan(now=102)


def test_changed_announcement_is_registered_again_under_the_same_id() -> None:
    view = RegistryView(SETTINGS)
    old = registration()
    view.introspection(old, 10, 100)
    view.registered(old, "passing")
    new = registration(version="0.2.0")
    view.introspection(new, 11, 101)
    assert [r.fingerprint for r in view.plan(101).register] == [new.fingerprint]
    assert new.service_id == old.service_id


def test_consul_lost_its_state_every_live_node_comes_back() -> None:
    view = RegistryView(SETTINGS)
    regs = [registration(instance=f"i{i}") for i in range(5)]
    for reg in regs:
        view.introspection(reg, 10, 100)
        view.registered(reg, "passing")
    assert not view.plan(100)
    reaped = view.observe(AgentSnapshot({}, {}), now=101)  # agent restarted, knows nothing
    assert reaped == []
    assert {r.service_id for r in view.plan(101).register} == {r.service_id for r in regs}


def test_node_reaped_by_consul_is_not_resurrected_until_it_shows_life() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    view.registered(reg, "passing")
    view.observe(snapshot(view, status="critical"), now=110)
    view.observe(snapshot(view, status="critical"), now=150)
    reaped = view.observe(AgentSnapshot({}, {}), now=175)  # DeregisterCriticalServiceAfter=1m
    assert reaped == [reg.node_id]
    assert not view.plan(171)
    assert view.heartbeat(reg.node_id, "healthy", "ok", now=172)
    assert [r.service_id for r in view.plan(172).register] == [reg.service_id]


def test_node_lost_while_briefly_critical_is_registered_again() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    view.registered(reg, "critical")
    view.observe(snapshot(view, status="critical"), now=101)
    assert view.observe(AgentSnapshot({}, {}), now=105) == []  # agent restart, not a reap
    assert [r.service_id for r in view.plan(105).register] == [reg.service_id]


def test_silent_node_is_not_registered_again_after_its_ttl() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    assert view.plan(100 + SETTINGS.node_ttl_s + 1).register == []
    assert view.plan(100 + SETTINGS.node_ttl_s - 1).register


def test_shutdown_removes_and_stale_shutdown_is_ignored() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, announced_at=50, now=100)
    view.registered(reg, "passing")
    assert not view.shutdown(reg.node_id, sent_at=40)  # from an earlier life
    assert view.shutdown(reg.node_id, sent_at=60)
    plan = view.plan(102)
    assert [(r.service_id, r.kv_key) for r in plan.remove] == [(reg.service_id, reg.kv_key)]
    assert plan.register == []
    view.removed(plan.remove[0])
    assert not view.plan(103) and reg.service_id not in view.observed


def test_restart_after_shutdown_cancels_the_removal() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 50, 100)
    view.shutdown(reg.node_id, 60)
    view.introspection(registration(), 70, 102)  # the same instance started again
    plan = view.plan(102)
    assert plan.remove == [] and len(plan.register) == 1


def test_late_announcement_from_before_the_shutdown_stays_removed() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 50, 100)
    view.shutdown(reg.node_id, 60)
    view.introspection(registration(), 55, 102)
    assert view.plan(102).register == [] and len(view.plan(102).remove) == 1


def test_tombstone_is_final() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 50, 100)
    assert view.tombstone(reg.node_id, 60)
    assert not view.tombstone(reg.node_id, 61)
    assert [r.node_id for r in view.plan(102).remove] == [reg.node_id]


def test_unknown_heartbeat_is_reported() -> None:
    assert not RegistryView(SETTINGS).heartbeat("nope", "healthy", "", 1)


def test_heartbeats_feed_ttl_checks_with_mapped_status() -> None:
    view = RegistryView(SETTINGS)
    reg = registration(health_endpoint=None)
    view.introspection(reg, 10, 100)
    view.registered(reg, "passing")
    view.heartbeat(reg.node_id, "degraded", "slow", 101)
    assert view.plan(101).ttl == [(reg.service_id, reg.check_id, "warning", "slow")]
    view.ttl_sent(reg.check_id, "warning")
    assert not view.plan(102)


def test_failures_back_off_exponentially_and_are_retried() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    assert view.failed(reg.service_id, now=100) == 1
    assert view.plan(100.5).register == []
    assert view.plan(101).register
    assert view.failed(reg.service_id, now=101) == 2
    assert [retry_delay(n, SETTINGS) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 8, 8]


class FlakyAgent:
    """An in-memory Consul agent that refuses the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.services: dict[str, str] = {}
        self.kv: dict[str, str] = {}
        self.manifest_of: dict[str, str] = {}
        self.lock = threading.Lock()

    def _maybe_fail(self) -> None:
        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise ConsulUnavailableError("connection refused")

    def snapshot(self) -> AgentSnapshot:
        self._maybe_fail()
        with self.lock:
            return AgentSnapshot(dict(self.services), {s: "passing" for s in self.services})

    def register(self, reg: Registration, initial_status: str | None) -> None:
        self._maybe_fail()
        with self.lock:
            # A service found in Consul always has its manifest: written first.
            assert reg.kv_key in self.kv, f"{reg.service_id} registered before its manifest"
            self.services[reg.service_id] = reg.fingerprint
            self.manifest_of[reg.service_id] = reg.kv_key

    def deregister(self, service_id: str) -> None:
        self._maybe_fail()
        with self.lock:
            self.services.pop(service_id, None)

    def write_manifests(self, items: list[tuple[str, str]]) -> None:
        assert len(items) <= 64
        self._maybe_fail()
        with self.lock:
            self.kv.update(items)

    def delete_manifests(self, keys: list[str]) -> None:
        assert len(keys) <= 64
        self._maybe_fail()
        with self.lock:
            live = {self.manifest_of[sid] for sid in self.services if sid in self.manifest_of}
            assert not live & set(keys), "manifest deleted while its service is registered"
            for key in keys:
                self.kv.pop(key, None)

    def ttl_update(self, check_id: str, status: str, note: str) -> None:
        self._maybe_fail()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


@contextlib.asynccontextmanager
async def running(reconciler: Reconciler) -> AsyncIterator[None]:
    """The reconciler's loop runs inside the block; it is cancelled (and must end so) after."""
    task = asyncio.create_task(reconciler.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_reconciler_retries_until_consul_answers_and_drops_nothing() -> None:
    settings = RegistrySettings(
        reconcile_interval_s=0.05,
        retry_base_s=0.01,
        retry_max_s=0.05,
        initial_probe=False,
        consul_http_addr="x:1",
    )
    view = RegistryView(settings)
    agent = FlakyAgent(failures=6)
    loop = asyncio.get_running_loop()
    reconciler = Reconciler(view, agent, settings, clock=loop.time)  # type: ignore[arg-type]
    regs = [registration(instance=f"i{i}") for i in range(150)]  # more than one KV batch
    for reg in regs:
        view.introspection(reg, 1, loop.time())
    async with running(reconciler):
        await wait_until(lambda: len(agent.services) == len(regs))
        assert set(agent.services) == {r.service_id for r in regs}
        assert set(agent.kv) == {r.kv_key for r in regs}
        assert reconciler.stats.failures >= 1
        # Consul restarts and forgets everything: the reconciler fills it again.
        with agent.lock:
            agent.services.clear()
        await wait_until(lambda: len(agent.services) == len(regs))
        view.shutdown(regs[0].node_id, sent_at=2)
        reconciler.wake()
        await wait_until(
            lambda: not (regs[0].service_id in agent.services or regs[0].kv_key in agent.kv)
        )


def test_registered_before_health_answers_is_probed_until_passing() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    view.registered(reg, "critical", now=100)
    assert [r.service_id for r in view.plan(100).promote] == [reg.service_id]
    view.still_unhealthy(reg, now=100)
    assert view.plan(100.1).promote == []
    assert view.plan(100 + SETTINGS.promote_interval_s).promote
    view.registered(reg, "passing", now=101)
    assert view.plan(102).promote == [] and view.next_probe_in(102) is None


def test_probing_gives_up_after_its_window() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    view.registered(reg, "critical", now=100)
    assert view.plan(100 + SETTINGS.promote_window_s + 1).promote == []
    assert reg.service_id not in view.unconfirmed


def test_restarted_node_still_critical_in_consul_is_probed_again() -> None:
    view = RegistryView(SETTINGS)
    reg = registration()
    view.introspection(reg, 10, 100)
    view.registered(reg, "passing", now=100)
    view.observe(snapshot(view, status="critical"), now=110)  # it was killed
    view.introspection(registration(), 20, now=112)  # and started again, same ID
    plan = view.plan(112)
    assert plan.register == [] and [r.service_id for r in plan.promote] == [reg.service_id]


# -- batching by bytes, isolating what Consul refuses, expiry ----------------------------------


def test_manifests_are_batched_by_bytes_as_well_as_by_count() -> None:
    from onex_registry.consul_registry import TXN_MAX_BYTES
    from onex_registry.reconcile import manifest_batches, txn_cost

    small = [registration(instance=f"s{i}") for i in range(150)]
    assert [len(b) for b in manifest_batches(small, TXN_MAX_BYTES)] == [64, 64, 22]
    big = [
        registration(instance=f"b{i}", description="d" * 4000, tags=[f"t{j}" for j in range(30)])
        for i in range(64)
    ]
    batches = manifest_batches(big, 32 * 1024)
    assert len(batches) > 1
    for batch in batches:
        assert sum(txn_cost(r) for r in batch) <= 32 * 1024 or len(batch) == 1
    assert [r for b in batches for r in b] == big  # nothing lost, order kept


class RefusingAgent(FlakyAgent):
    """Refuses (like Consul's 413/409) any transaction or registration touching ``poison``."""

    def __init__(self, poison: str) -> None:
        super().__init__(failures=0)
        self.poison = poison
        self.transactions: list[int] = []

    def write_manifests(self, items: list[tuple[str, str]]) -> None:
        from onex_registry.consul_registry import ConsulRefusedError

        self.transactions.append(len(items))
        if any(key == self.poison for key, _ in items):
            raise ConsulRefusedError("Consul KV transaction failed: 413 Request body too large")
        super().write_manifests(items)


async def test_a_record_consul_refuses_is_isolated_and_dead_lettered() -> None:
    settings = RegistrySettings(
        reconcile_interval_s=0.05, initial_probe=False, consul_http_addr="x:1"
    )
    view = RegistryView(settings)
    regs = [registration(instance=f"i{i}") for i in range(6)]
    agent = RefusingAgent(poison=regs[2].kv_key)
    loop = asyncio.get_running_loop()
    reconciler = Reconciler(view, agent, settings, clock=loop.time)  # type: ignore[arg-type]
    refused: list[tuple[str, str]] = []

    async def on_refused(reg: Registration, reason: str) -> None:
        refused.append((reg.node_id, reason))

    reconciler.on_refused = on_refused
    for reg in regs:
        view.introspection(reg, 1, loop.time())
    async with running(reconciler):
        others = {r.service_id for r in regs} - {regs[2].service_id}
        await wait_until(lambda: set(agent.services) == others)
        assert refused and refused[0][0] == regs[2].node_id and "413" in refused[0][1]
        assert regs[2].node_id not in view.records
        assert reconciler.stats.refused == 1
        await asyncio.sleep(0.2)
        assert len(refused) == 1  # set aside once, not retried forever


def test_silent_records_expire_and_their_binding_is_freed() -> None:
    settings = RegistrySettings(node_ttl_s=60, record_ttl_s=600, consul_http_addr="x:1")
    view = RegistryView(settings)
    alive, silent = registration(instance="a"), registration(instance="s")
    view.introspection(alive, 1, now=1000)
    view.introspection(silent, 1, now=100)
    assert view.expire(now=650) == []
    expired = view.expire(now=1001)
    assert [r.registration.node_id for r in expired] == [silent.node_id]
    assert silent.node_id not in view.records and silent.node_id in view.removals
    assert {r.kv_key for r in view.plan(1001).remove} == {silent.kv_key}


def test_record_ttl_below_node_ttl_is_refused() -> None:
    with pytest.raises(ValueError, match="REGISTRY_RECORD_TTL_S"):
        RegistrySettings(node_ttl_s=90, record_ttl_s=30, consul_http_addr="x:1")
