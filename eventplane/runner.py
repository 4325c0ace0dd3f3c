"""The runner: composes store, bus, controller runtime, relay and projection workers.

Top of the library, just below ``evtctl``: each CLI command is one call into here, and
embedders use the same functions. Nothing here decides anything — it wires the parts
from ``Settings`` and runs them.

- ``open_stack(settings)``: the configured store and bus, closed together.
- ``run_workers(settings, stop_event=…)``: the body of ``evtctl run`` — the runtime, the
  relay and one ``ProjectionWorker`` per registered projection in one process, until the
  stop event (SIGTERM/SIGINT via ``install_signal_handlers``), then a bounded shutdown.
- ``publish_intents`` / ``wait_for`` / ``apply_and_wait``: ``evtctl apply|delete [--wait]``.
- ``get_objects``, ``describe``, ``projection_status``, ``rebuild_projection``,
  ``follow_events``: the read side of the CLI.

**Is a worker running?** Every ``run_workers`` process holds presence leases in the
store — ``workers:controllers`` and ``workers:projections`` for what it runs — renewed
every ``PRESENCE_TTL / 3`` seconds and released on clean shutdown. A lease has one holder,
so with several worker processes one holds it and the others keep trying; "held by
someone" is what matters. ``wait_for`` tries to take a lease itself: if it gets it, no
live worker runs that part, and on the embedded default (SQLite store + embedded bus) it
drives that part in-process while it waits — the relay, ``ControllerRuntime.run_until_idle``
and the projection workers' ``run_once`` — then gives the lease back. A worker killed with
SIGKILL stops counting after ``PRESENCE_TTL`` seconds, so a waiting ``apply`` takes over by
itself. Driving in-process is safe next to real workers (competing consumers, optimistic
concurrency, checkpointed projections); the lease only avoids doing the work twice.
On PostgreSQL + NATS the CLI never acts as a worker: with no worker it times out and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from eventplane.bus import Bus, Relay, open_bus
from eventplane.config import Settings
from eventplane.controller.runtime import ControllerRuntime
from eventplane.errors import (
    AuthorizationError,
    ConflictError,
    EventplaneError,
    FieldError,
    NotFoundError,
    ResourceFailedError,
    UnavailableError,
    ValidationError,
    WaitTimeoutError,
)
from eventplane.event.model import Category, ConditionStatus, Event
from eventplane.event.mutate import FAILED_PHASE
from eventplane.event.state import ResourceState, fold
from eventplane.projection import (
    Projection,
    ProjectionWorker,
    checkpoint_name,
    create_read_model_engine,
)
from eventplane.registry import Registry, get_default_registry
from eventplane.security import (
    Keypair,
    policy_from_settings,
    sign_intent,
    trusted_keys_from_settings,
)
from eventplane.store import EventFilter, EventStore, open_store
from eventplane.utils import uuid7

__all__ = [
    "PRESENCE_LEASES",
    "PRESENCE_TTL",
    "ProjectionStatus",
    "Stack",
    "WaitResult",
    "apply_and_wait",
    "describe",
    "follow_events",
    "get_objects",
    "install_signal_handlers",
    "open_stack",
    "projection_status",
    "publish_intents",
    "rebuild_projection",
    "run_workers",
    "wait_for",
]

log = logging.getLogger(__name__)

PRESENCE_TTL = 10.0  # seconds a worker process counts as alive after its last renewal
PRESENCE_LEASES = {"controllers": "workers:controllers", "projections": "workers:projections"}
_WAIT_POLL = 0.5  # longest sleep between checks while waiting for a resource
_STOP_MARGIN = 5.0  # extra seconds past shutdown_grace before tasks are cancelled


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid7()}"


def _embedded(settings: Settings) -> bool:
    """SQLite store with the embedded SQL bus in the same file: the zero-setup default."""
    return settings.store_backend == "sqlite" and settings.bus_backend == "sqlite"


# -- the stack --------------------------------------------------------------------------------


@dataclass
class Stack:
    """An open store and (optionally) bus for one command or process."""

    settings: Settings
    store: EventStore
    bus: Bus | None
    registry: Registry = field(default_factory=get_default_registry)

    def require_bus(self) -> Bus:
        if self.bus is None:
            raise RuntimeError("this stack was opened without a bus")
        return self.bus


@asynccontextmanager
async def open_stack(
    settings: Settings,
    *,
    tenant: str | None = None,
    bus: bool = True,
    registry: Registry | None = None,
) -> AsyncIterator[Stack]:
    """The configured store (scoped to ``tenant``, or system-wide) and bus, closed on exit."""
    async with AsyncExitStack() as stack:
        store = open_store(settings.store_dsn(), tenant=tenant)
        stack.push_async_callback(store.close)
        opened_bus: Bus | None = None
        if bus:
            opened_bus = await open_bus(settings.bus_dsn())
            stack.push_async_callback(opened_bus.close)
        yield Stack(settings, store, opened_bus, registry or get_default_registry())


# -- workers ----------------------------------------------------------------------------------


def install_signal_handlers(stop_event: asyncio.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT set ``stop_event``; returns a function that removes the handlers."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_event.set)
            installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


def _runtime(
    settings: Settings, store: EventStore, bus: Bus, registry: Registry, **options: Any
) -> ControllerRuntime:
    security = settings.security
    # Zero trust, always: with nothing configured the runtime trusts the development keyring
    # under ``home`` (the one evtctl signs with from the same directory) and the development
    # policy (only the dev actor); a production config trusts only its listed keys.
    trusted = trusted_keys_from_settings(security, settings.home)
    policy = policy_from_settings(security)
    return ControllerRuntime(
        store,
        bus,
        registry=registry,
        settings=settings.runtime,
        trusted_keys=trusted,
        policy=policy,
        **options,
    )


async def _keep_presence(
    store: EventStore, names: Sequence[str], holder: str, stop_event: asyncio.Event
) -> None:
    try:
        while not stop_event.is_set():
            for name in names:
                try:
                    await store.acquire_lease(name, holder, PRESENCE_TTL)
                except (UnavailableError, EventplaneError) as exc:
                    log.debug("presence lease %s: %s", name, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), PRESENCE_TTL / 3)
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                await store.release_lease(name, holder)


async def run_workers(
    settings: Settings,
    *,
    stop_event: asyncio.Event,
    controllers: bool = True,
    projections: bool = True,
    relay: bool = True,
    projection_names: Sequence[str] | None = None,
    tenant: str | None = None,
    registry: Registry | None = None,
    started: Callable[[], None] | None = None,
    health_port: int | None = None,
    health_host: str = "127.0.0.1",
    tune_gc: bool = False,
) -> None:
    """Run the runtime, the relay and the projection workers until ``stop_event``.

    Each part runs as its own task; if one crashes (a bug — outages are retried inside
    each part) the others are stopped and the error is raised. After ``stop_event`` every
    part gets ``runtime.shutdown_grace`` (+5 s) to finish before it is cancelled.
    ``tenant`` confines the controller runtime to one tenant's intents (its own durable
    consumers ``eventplane-runtime-<tenant>``); projections and the relay always serve the
    whole store. ``started`` is called once everything is set up. ``health_port`` (0: any
    free port) serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``health_host`` for the
    process's lifetime (``eventplane.observability``). ``tune_gc`` (for a process of its
    own, as ``evtctl run``) sets the garbage collector up for a long-running worker.
    """
    if not (controllers or projections or relay):
        raise ValidationError(
            "nothing to run",
            [
                FieldError(
                    "run",
                    "every part is off",
                    "enable at least one of --controllers/--projections/--relay",
                )
            ],
        )
    # Here, not at the top: prometheus_client is only needed by worker processes.
    from eventplane.observability import HealthServer, WorkerSet

    registry = registry or get_default_registry()
    registry.check()
    holder = _holder()
    async with AsyncExitStack() as stack:
        store = open_store(settings.store_dsn())
        stack.push_async_callback(store.close)
        bus = await open_bus(settings.bus_dsn())
        stack.push_async_callback(bus.close)
        parts: dict[str, Awaitable[None]] = {}
        presence: list[str] = []
        observed = WorkerSet(store, bus, stop_event=stop_event)
        if health_port is not None:
            health = HealthServer(observed, host=health_host, port=health_port)
            await health.start()
            stack.push_async_callback(health.close)
        if controllers:
            runtime = _runtime(settings, store, bus, registry, holder_id=holder, tenant=tenant)
            observed.runtime = runtime
            parts["runtime"] = runtime.run(stop_event)
            presence.append(PRESENCE_LEASES["controllers"])
        if relay:
            observed.relay = Relay(store, bus, holder=holder)
            parts["relay"] = observed.relay.run(stop_event)
        if projections:
            engine = create_read_model_engine(settings.store_dsn())
            stack.push_async_callback(engine.dispose)
            # The store's own doorbell sees every commit from any process (PostgreSQL
            # NOTIFY; SQLite's data_version, polled). A bus doorbell is added only where
            # that polling is the sole wake-up: a SQLite store beside a NATS bus. (On
            # PostgreSQL it would decode and ack every event once more for nothing: ~6% of
            # a busy worker's CPU. On the embedded bus consuming would add write locks.)
            doorbell = (
                bus
                if settings.bus_backend == "nats" and settings.store_backend == "sqlite"
                else None
            )
            for cls in _projections(registry, projection_names):
                # One store per worker: each follower needs its own doorbell (a shared one
                # wakes only the first waiter).
                own = open_store(settings.store_dsn(), max_pool_size=2)
                stack.push_async_callback(own.close)
                worker = ProjectionWorker(cls(), own, engine, bus=doorbell)
                await worker.setup()
                observed.projections.append(worker)
                parts[f"projection {cls.NAME}"] = worker.run(stop_event)
            presence.append(PRESENCE_LEASES["projections"])
        parts["presence"] = _keep_presence(store, presence, holder, stop_event)
        tasks: dict[asyncio.Future[Any], str] = {
            asyncio.ensure_future(part): name for name, part in parts.items()
        }
        observed.tasks = {name: task for task, name in tasks.items()}
        log.info("workers %s: running %s", holder, ", ".join(parts))
        if tune_gc:
            _tune_gc_for_workers()
        if started is not None:
            started()
        stop_wait: asyncio.Future[Any] = asyncio.ensure_future(stop_event.wait())
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait({*tasks, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait and task.exception() is not None:
                    failure = task.exception()
                    log.error("workers %s: %s crashed: %r", holder, tasks[task], failure)
        finally:
            stop_event.set()
            stop_wait.cancel()
            grace = settings.runtime.shutdown_grace + _STOP_MARGIN
            _, late = await asyncio.wait(tasks, timeout=grace)
            for task in late:
                log.warning(
                    "workers %s: %s did not stop within %.0fs; cancelling",
                    holder,
                    tasks[task],
                    grace,
                )
                task.cancel()
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)
        if failure is not None:
            raise failure
        log.info("workers %s: stopped", holder)


# A busy worker keeps many objects alive for long (modules, pools, the runtime's stream
# memo), and CPython's default thresholds (700, 10, 10) re-scan them over and over: ~15% of
# a worker's CPU went to the collector in benchmarks/e2e.py, and intents/s rose by ~40% once
# it stopped. Freezing what start-up allocated and collecting the young generation after
# 50,000 allocations instead of 700 costs little memory: only reference cycles wait longer
# to be freed, and the hot paths create few.
_WORKER_GC_THRESHOLDS = (50_000, 20, 100)


def _tune_gc_for_workers() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_WORKER_GC_THRESHOLDS)


def _projections(registry: Registry, names: Sequence[str] | None = None) -> list[type[Projection]]:
    found: list[type[Projection]] = list(registry.projections())
    if names:
        found = [registry.projection(n) for n in names]
    return found


# -- apply / delete / wait --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WaitResult:
    """How one intent ended: ``ok`` (Ready / Deleted) or a failure with its reason."""

    intent: Event
    ok: bool
    reason: str
    message: str
    state: ResourceState
    position: int  # the stream's last position when the outcome was decided
    rejected: bool = False  # an IntentRejected fact: the intent was never stored

    @property
    def error(self) -> EventplaneError | None:
        """The error ``evtctl`` exits with for a failed outcome (None when ok)."""
        if self.ok:
            return None
        what = f"{self.intent.kind} {self.intent.name!r} ({self.intent.tenant}): "
        text = what + f"{self.reason}: {self.message}"
        if self.reason == "NotFound":
            return NotFoundError(text)
        if self.reason in ("Forbidden", "SignatureInvalid", "TenantMismatch"):
            return AuthorizationError(text)
        if self.reason in ("DeletionInProgress", "Superseded"):
            return ConflictError(text)
        if self.rejected:
            return ValidationError(text)
        return ResourceFailedError(text)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.intent.kind,
            "name": self.intent.name,
            "tenant": self.intent.tenant,
            "result": "ok" if self.ok else "failed",
            "reason": self.reason,
            "message": self.message,
            "generation": self.state.generation,
        }


async def publish_intents(
    settings: Settings, intents: Sequence[Event], *, keypair: Keypair | None = None
) -> None:
    """Publish intents on the configured bus (the runtime stores and reconciles them).

    With ``keypair`` every intent is signed first (``sign_intent``); without one they must
    already be signed — the runtime rejects an unsigned intent as ``SignatureInvalid``.
    Library callers get their keypair from ``eventplane.security.actor_identity``.
    """
    if not intents:
        return
    if keypair is not None:
        intents = [sign_intent(intent, keypair) for intent in intents]
    bus = await open_bus(settings.bus_dsn())
    try:
        await bus.publish(list(intents))
    finally:
        await bus.close()


def _outcome(intent: Event, events: list[Event]) -> WaitResult | None:
    """The terminal outcome of ``intent`` from its stream's events, or None (not yet)."""
    position = (events[-1].metadata.position or 0) if events else 0
    state = fold(events, initial=ResourceState.empty(*intent.stream))
    for event in events:
        if (
            event.category is Category.FACT
            and event.reason == "IntentRejected"
            and event.data.get("intent_id") == str(intent.id)
        ):
            reason = str(event.data.get("reason", "Rejected"))
            message = str(event.data.get("message", ""))
            return WaitResult(intent, False, reason, message, state, position, rejected=True)
    index = next((i for i, e in enumerate(events) if e.id == intent.id), None)
    if index is None:
        return None  # not admitted yet
    generation = events[index].metadata.generation
    after = events[index + 1 :]
    failed_event = next(
        (
            e
            for e in after
            if e.category is Category.FACT
            and e.reason == "ReconcileFailed"
            and int(str(e.data.get("generation", 0))) >= generation
        ),
        None,
    )
    failed = (
        WaitResult(
            intent,
            False,
            str(failed_event.data.get("reason", "ReconcileFailed")),
            str(failed_event.data.get("message", "")),
            state,
            position,
        )
        if failed_event is not None
        else None
    )
    if intent.reason == "DeletionRequested":
        if any(e.category is Category.FACT and e.reason == "Deleted" for e in after):
            return WaitResult(intent, True, "Deleted", "deleted", state, position)
        return failed
    if not state.exists:
        return WaitResult(
            intent, False, "Deleted", "deleted before it became ready", state, position
        )
    status = state.status
    ready = status.condition("Ready")
    if ready is not None and ready.observed_generation >= generation:
        if ready.status is ConditionStatus.TRUE:
            return WaitResult(intent, True, ready.reason, ready.message, state, position)
        if ready.status is ConditionStatus.FALSE:
            return WaitResult(intent, False, ready.reason, ready.message, state, position)
    if status.phase == FAILED_PHASE and status.observed_generation >= generation:
        return WaitResult(intent, False, "Failed", status.message, state, position)
    return failed


class _Driver:
    """Drives relay, runtime and projections in-process while nobody else does (embedded)."""

    def __init__(self, settings: Settings, store: EventStore, bus: Bus, registry: Registry) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.registry = registry
        self.holder = _holder()
        self.held: set[str] = set()
        self.engine: AsyncEngine | None = None

    async def _claim(self, part: str) -> bool:
        name = PRESENCE_LEASES[part]
        if await self.store.acquire_lease(name, self.holder, PRESENCE_TTL):
            self.held.add(name)
            return True
        return False

    async def drive(self, timeout: float) -> None:  # noqa: ASYNC109 (bounded drive)
        if await self._claim("controllers"):
            runtime = _runtime(
                self.settings,
                self.store,
                self.bus,
                self.registry,
                holder_id=self.holder,
                timer_scan_interval=None,
                shutdown_grace=1.0,
            )
            with contextlib.suppress(WaitTimeoutError):
                await runtime.run_until_idle(timeout=max(0.1, timeout))
            relay = Relay(self.store, self.bus, holder=self.holder)
            try:
                await relay.run_once()
            finally:
                await self.store.release_lease(relay.name, relay.holder)
        if await self._claim("projections"):
            if self.engine is None:
                self.engine = create_read_model_engine(self.settings.store_dsn())
            for cls in _projections(self.registry):
                await ProjectionWorker(cls(), self.store, self.engine).run_once()

    async def close(self) -> None:
        for name in self.held:
            with contextlib.suppress(Exception):
                await self.store.release_lease(name, self.holder)
        if self.engine is not None:
            await self.engine.dispose()


async def wait_for(
    settings: Settings,
    intents: Sequence[Event],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 (a bounded wait is the point)
    drive: bool | None = None,
    registry: Registry | None = None,
) -> list[WaitResult]:
    """Wait until every intent reached a terminal outcome and the projections caught up.

    Success is ``Ready=True`` for the intent's generation (or ``Deleted`` for a deletion);
    failure is an ``IntentRejected`` fact for it, ``Ready=False`` for its generation,
    ``Failed`` or a ``ReconcileFailed`` fact. Then every registered projection's checkpoint
    must reach the stream's position, so a following ``evtctl get`` shows the outcome.

    ``drive`` (default: on the embedded stack only) lets this process do the work of
    missing workers (see the module docstring). Raises WaitTimeoutError after ``timeout``.
    """
    registry = registry or get_default_registry()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    drive = _embedded(settings) if drive is None else drive
    results: dict[Any, WaitResult] = {}
    async with AsyncExitStack() as stack:
        store = open_store(settings.store_dsn())
        stack.push_async_callback(store.close)
        driver: _Driver | None = None
        if drive:
            bus = await open_bus(settings.bus_dsn())
            stack.push_async_callback(bus.close)
            driver = _Driver(settings, store, bus, registry)
            stack.push_async_callback(driver.close)
        keys = [checkpoint_name(p.NAME) for p in _projections(registry)]
        while True:
            for intent in intents:
                if intent.id not in results:
                    found = _outcome(intent, await store.read_stream(*intent.stream))
                    if found is not None:
                        results[intent.id] = found
            if len(results) == len(intents):
                target = max(r.position for r in results.values())
                checkpoints = [await store.load_checkpoint(k) for k in keys]
                if all(c >= target for c in checkpoints):
                    return [results[i.id] for i in intents]
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeoutError(
                    await _timeout_message(store, intents, results, timeout, drive)
                )
            if driver is not None:
                await driver.drive(remaining)
            await store.wait_for_append(min(_WAIT_POLL, max(0.01, deadline - loop.time())))


async def _timeout_message(
    store: EventStore,
    intents: Sequence[Event],
    results: dict[Any, WaitResult],
    waited: float,
    drove: bool,
) -> str:
    waiting = [f"{i.kind}/{i.name}" for i in intents if i.id not in results]
    what = ", ".join(waiting) if waiting else "the projections to catch up"
    hint = ""
    if not drove:
        probe = _holder()
        alive = []
        for part, name in PRESENCE_LEASES.items():
            if await store.acquire_lease(name, probe, 0.001):
                await store.release_lease(name, probe)
            else:
                alive.append(part)
        missing = [p for p in PRESENCE_LEASES if p not in alive]
        if missing:
            hint = (
                f"; no worker is running {' or '.join(missing)} — start `evtctl run` "
                "against this store and bus"
            )
    return f"gave up after {waited:g}s waiting for {what}{hint}; raise --timeout to wait longer"


async def apply_and_wait(
    settings: Settings,
    intents: Sequence[Event],
    *,
    wait: bool = True,
    timeout: float = 60.0,  # noqa: ASYNC109
    drive: bool | None = None,
    keypair: Keypair | None = None,
) -> list[WaitResult]:
    """Publish ``intents`` (signed with ``keypair`` when given, see ``publish_intents``) and
    (with ``wait``) wait for their outcomes (see ``wait_for``)."""
    if keypair is not None:
        intents = [sign_intent(intent, keypair) for intent in intents]
    await publish_intents(settings, intents)
    if not wait:
        return []
    return await wait_for(settings, intents, timeout=timeout, drive=drive)


# -- reading ----------------------------------------------------------------------------------


def _serving(registry: Registry, kind: str) -> type[Projection]:
    for cls in registry.projections():
        if getattr(cls, "SERVES", None) == kind:
            found: type[Projection] = cls
            return found
    raise NotFoundError(
        f"no read model serves kind {kind!r}; `evtctl describe {kind} NAME` shows a resource "
        "from its events"
    )


async def get_objects(
    settings: Settings, kind: str, name: str | None = None, *, registry: Registry | None = None
) -> tuple[list[dict[str, Any]], Projection]:
    """The read model's objects of ``kind`` in the configured tenant (one, or all).

    Returns the objects and the projection that served them (for table rendering).
    Raises NotFoundError for a named resource that is not in the read model.
    """
    registry = registry or get_default_registry()
    projection = _serving(registry, kind)()
    engine = create_read_model_engine(settings.store_dsn(), write=False)
    try:
        async with AsyncExitStack() as stack:
            # Make sure the tables exist so an empty store reads as "nothing", not an error.
            store = open_store(settings.store_dsn(), tenant=settings.tenant)
            stack.push_async_callback(store.close)
            await store.last_position()
            from eventplane.projection import create_read_model_tables

            await create_read_model_tables(engine, [projection])
            async with AsyncSession(engine) as session:
                objects = await projection.objects(session, tenant=settings.tenant, name=name)
    finally:
        await engine.dispose()
    if name is not None and not objects:
        raise NotFoundError(
            f"{kind} {name!r} not found in tenant {settings.tenant!r} (`evtctl get {kind}` "
            "lists what exists)"
        )
    return objects, projection


async def describe(settings: Settings, kind: str, name: str) -> tuple[ResourceState, list[Event]]:
    """The folded state and the full event history of one resource in the caller's tenant."""
    async with open_stack(settings, tenant=settings.tenant, bus=False) as stack:
        events = await stack.store.read_stream(settings.tenant, kind, name)
    if not events:
        raise NotFoundError(
            f"{kind} {name!r} has no events in tenant {settings.tenant!r}; check the name "
            "and --tenant"
        )
    return fold(events), events


async def follow_events(
    settings: Settings,
    *,
    filter: EventFilter,
    since: int = 0,
    follow: bool = False,
    stop_event: asyncio.Event | None = None,
    batch: int = 500,
) -> AsyncIterator[Event]:
    """The caller's tenant's events after position ``since`` in position order; with
    ``follow``, keep yielding new ones until ``stop_event`` (never skipping one: it
    follows ``read_all(after=…)``, which is gap-safe)."""
    stop_event = stop_event or asyncio.Event()
    async with open_stack(settings, tenant=settings.tenant, bus=False) as stack:
        store = stack.store
        after = since
        while not stop_event.is_set():
            events = await store.read_all(after=after, limit=batch, filter=filter)
            for event in events:
                yield event
                after = event.metadata.position or after
            if len(events) == batch:
                continue
            if not follow:
                return
            waiter = asyncio.ensure_future(store.wait_for_append(1.0))
            stopper = asyncio.ensure_future(stop_event.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiter, stopper):
                    task.cancel()
                await asyncio.gather(waiter, stopper, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    checkpoint: int
    lag: int
    tables: tuple[str, ...]


async def projection_status(
    settings: Settings, *, registry: Registry | None = None
) -> list[ProjectionStatus]:
    """Every registered projection with its checkpoint and lag."""
    registry = registry or get_default_registry()
    async with open_stack(settings, bus=False) as stack:
        last = await stack.store.last_position()
        out = []
        for cls in _projections(registry):
            checkpoint = await stack.store.load_checkpoint(checkpoint_name(cls.NAME))
            tables = tuple(str(t.__tablename__) for t in cls.TABLES)
            out.append(ProjectionStatus(cls.NAME, checkpoint, max(0, last - checkpoint), tables))
    return out


async def rebuild_projection(
    settings: Settings,
    name: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    registry: Registry | None = None,
) -> int:
    """Clear projection ``name``'s tables and replay the log into them; returns the number
    of events applied (see ``ProjectionWorker.rebuild``)."""
    registry = registry or get_default_registry()
    cls: type[Projection] = registry.projection(name)
    engine = create_read_model_engine(settings.store_dsn())
    try:
        async with open_stack(settings, bus=False) as stack:
            return await ProjectionWorker(cls(), stack.store, engine).rebuild(progress=progress)
    finally:
        await engine.dispose()
