"""ControllerRuntime: bus deliveries in, reconciled events out — the loop of DESIGN.md §6.

Controller layer: drives the pure controllers (``eventplane.controller.base``) with the
store and the bus below it. ``evtctl run`` (through ``eventplane.runner``) calls
``run(stop_event)``; ``evtctl apply --wait`` on the embedded stack calls
``run_until_idle()``; the metrics endpoint reads ``stats``.

Per resource ("key" = the stream ``(tenant, kind, name)``), whatever woke it:

1. ``read_stream`` and ``fold`` — one read;
2. each new intent: checked (known kind, api version, spec, secret guard, and
   signature/policy when configured) and ``admit_intent``-ed, or ``reject_intent``-ed into
   an ``<Kind>.IntentRejected`` fact; an intent whose id (or rejection id) is already in
   the stream is a duplicate delivery and changes nothing. An event whose tenant, kind or
   category differs from its subject's is refused at dispatch (term + error log) and
   written nowhere;
3. every controller of the kind ``reconcile``s once, with ``ReconcileContext.for_trigger``
   (time and ids from the trigger, so a replay decides the same), through
   ``apply_decision`` / ``record_exception`` — the mutate helpers write every event;
4. ONE ``append(..., expected_version=<version read>)`` — one write;
5. ack. On ``ConcurrencyError`` (another runtime wrote the stream) read and decide again,
   at most ``max_conflict_retries`` times, then nak with a delay: a trigger is never lost.

Work is serialized per key with client-go's "dirty/processing" queue: one key is handled
by at most one worker at a time, and whatever arrives for it meanwhile is coalesced into
its next turn (level-triggered controllers only need the latest state). Different keys run
concurrently on ``max_concurrency`` workers; deliveries are fetched in batches with at most
``max_inflight`` unsettled at once.

Timers: ``requeue_after`` and retry backoff are written by the mutate helpers as
``<Kind>.RequeueScheduled`` with ``due_at``; the fold exposes ``state.requeue_at``. The
runtime keeps an in-memory timer heap fed by its own appends and by scanning the store
(``RequeueScheduled`` / ``RequeueCleared`` / ``Deleted`` events) at start and every
``timer_scan_interval`` seconds — so timers survive a restart and a dead peer's timers are
picked up by the survivors. A fired timer re-reads the stream and reconciles only if
``state.requeue_at`` is really due; its trigger is the ``RequeueScheduled`` event and
``ctx.now`` its ``due_at``. Two runtimes firing the same timer derive the same event ids,
so the second append is an idempotent no-op.

Ordering: an intent older (``occurred_at``) than one already admitted for the resource is
rejected as ``Superseded`` rather than applied over the newer one, so competing consumers
that see two intents in either order converge on the newest.

Watches beyond a controller's own intents (``Controller.WATCH`` naming internal/fact events)
get one durable consumer per distinct subject filter. Such an event wakes the controller's
resource with the same tenant and name (for its own kind, the event's own stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pydantic

from eventplane.bus.base import (
    Bus,
    ConsumerConfig,
    DeliverPolicy,
    Delivery,
    Subscription,
    subject_filter,
)
from eventplane.config import RuntimeSettings
from eventplane.controller.base import Controller, ControllerDecision, RetryPolicy
from eventplane.errors import (
    BusError,
    ConcurrencyError,
    ConfigError,
    ConflictError,
    SecretMaterialError,
    StoreError,
    StoreUnavailableError,
    UnavailableError,
    UnknownKindError,
    WaitTimeoutError,
)
from eventplane.event.decision import ReconcileContext, ReconcileError
from eventplane.event.model import Category, Event, stream_id
from eventplane.event.mutate import admit_intent, apply_decision, reject_intent, rejection_id
from eventplane.event.state import ResourceState, evolve, fold
from eventplane.registry import Registry, get_default_registry
from eventplane.security.policy import Policy
from eventplane.security.secrets import ensure_event_has_no_secret_material
from eventplane.security.signing import SignatureError, TrustedKeys, verify_intent
from eventplane.security.tenancy import SubjectMismatchError, check_subject_tenant
from eventplane.spec import validation_errors
from eventplane.store.base import EventFilter, EventStore
from eventplane.utils import parse_time, utcnow, uuid7

__all__ = ["DEFAULT_RETRY", "DURATION_BUCKETS", "ControllerRuntime", "Histogram", "RuntimeStats"]

log = logging.getLogger(__name__)

Key = tuple[str, str, str]

#: The backoff used when neither ``retry`` nor ``settings`` is given: 5 ms doubling
#: (client-go's per-item default base) to a one-minute cap, eight attempts.
DEFAULT_RETRY = RetryPolicy(
    base=timedelta(milliseconds=5), cap=timedelta(seconds=60), max_attempts=8
)

#: Upper bounds (seconds) of the reconcile-duration histogram buckets (Prometheus style).
DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_RELEASE_DELAY = 0.0  # nak delay for work handed back at shutdown: someone else may take it
_CONFLICT_NAK_DELAY = 0.5  # nak delay once the conflict bound is hit
_ERROR_NAK_DELAY = 1.0  # first nak delay after a store/bus failure (doubles, capped)
_MAX_ERROR_NAK_DELAY = 30.0
_STREAM_MEMO_SIZE = 10_000  # streams whose state the runtime keeps between turns


# -- statistics ---------------------------------------------------------------------------


@dataclass(slots=True)
class Histogram:
    """A cumulative-bucket histogram (Prometheus semantics: ``counts[i]`` = observations
    <= ``buckets[i]``, the last slot is +Inf)."""

    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    sum: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.counts[-1] += 1


@dataclass(slots=True)
class RuntimeStats:
    """Counters a metrics endpoint can export. Monotonic for the runtime's lifetime."""

    deliveries: int = 0  # bus deliveries received
    #: reconciles by (kind, outcome); outcome is done / requeue / retry / failed, or
    #: "error" when the controller raised (recorded as a retry or failure)
    reconciles: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: seconds from reading a stream to its append, per kind
    reconcile_seconds: dict[str, Histogram] = field(default_factory=dict)
    retries: Counter[str] = field(default_factory=Counter)  # retry backoffs scheduled, by kind
    failures: Counter[str] = field(default_factory=Counter)  # ReconcileFailed facts, by kind
    rejections: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reason)
    admitted: int = 0  # intents stored
    duplicates: int = 0  # deliveries of intents already stored or rejected
    conflicts: int = 0  # ConcurrencyError / ConflictError on append (then re-decided)
    events_appended: int = 0
    timers_fired: int = 0
    released: int = 0  # deliveries handed back (nak) after errors, conflicts or shutdown
    errors: int = 0  # store/bus failures while handling a key
    terminated: int = 0  # deliveries refused outright (subject/tenant mismatch)
    commits: int = 0  # store.append_many calls (group commits); events_appended / commits
    #                   and reconciles / commits show how well appends are grouped

    def observe(self, kind: str, seconds: float) -> None:
        hist = self.reconcile_seconds.get(kind)
        if hist is None:
            hist = self.reconcile_seconds[kind] = Histogram()
        hist.observe(seconds)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (for ``evtctl`` status output and tests)."""
        return {
            "deliveries": self.deliveries,
            "reconciles": {f"{k}/{o}": n for (k, o), n in sorted(self.reconciles.items())},
            "reconcile_seconds": {
                k: {
                    "count": h.count,
                    "sum": h.sum,
                    "buckets": {
                        **{str(b): n for b, n in zip(h.buckets, h.counts[:-1], strict=True)},
                        "+Inf": h.counts[-1],
                    },
                }
                for k, h in sorted(self.reconcile_seconds.items())
            },
            "retries": dict(self.retries),
            "failures": dict(self.failures),
            "rejections": {f"{k}/{r}": n for (k, r), n in sorted(self.rejections.items())},
            "admitted": self.admitted,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "events_appended": self.events_appended,
            "timers_fired": self.timers_fired,
            "released": self.released,
            "errors": self.errors,
            "terminated": self.terminated,
            "commits": self.commits,
        }


# -- work items ---------------------------------------------------------------------------


class _Ticket:
    """One delivery, shared by the keys it woke; settled when the last of them is done."""

    __slots__ = ("delivery", "done", "failed", "nak_delay", "remaining")

    def __init__(self, delivery: Delivery, remaining: int) -> None:
        self.delivery = delivery
        self.remaining = remaining
        self.failed = False
        self.done = False
        self.nak_delay = 0.0


@dataclass(slots=True)
class _Work:
    """Everything waiting for one key's next turn (coalesced)."""

    intents: list[_Ticket] = field(default_factory=list)
    watched: list[_Ticket] = field(default_factory=list)
    timer: bool = False
    queued: bool = False

    def tickets(self) -> list[_Ticket]:
        return [*self.intents, *self.watched]


@dataclass(slots=True)
class _Result:
    """What one turn of a key did (for stats, logs and timers)."""

    state: ResourceState
    appended: list[Event] = field(default_factory=list)
    trigger: Event | None = None
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (controller, outcome)
    rejected: list[tuple[Event, str, str]] = field(default_factory=list)  # intent, reason, msg
    admitted: int = 0
    duplicates: int = 0
    timer_fired: bool = False


@dataclass(slots=True)
class _Memo:
    """What a turn needs from a stream, as of the runtime's own last successful append to
    it: the folded state (its ``version`` is the expected version of the next append), the
    ids already in the stream (redelivery detection) and the newest admitted intent's time.
    """

    state: ResourceState
    known: set[UUID]
    last_intent_at: datetime | None


class _StreamMemo:
    """The streams this runtime wrote last, so a turn need not read them back (LRU).

    Safe because every turn ends in an append with ``expected_version``: if anyone else
    wrote the stream since (another runtime, a restart), that append fails with a conflict,
    nothing is written, and the turn is decided again from a fresh read. The same holds for
    a stream the runtime has never seen when an intent triggers the turn: it is decided as
    new (admitting an intent always appends), and a stream that does exist turns the append
    into a conflict. Turns that might append nothing (watched events, timers) always read.

    One case the append accepts without a conflict: an intent redelivered to a runtime
    that has no memo of its stream (after a crash between append and ack) is decided as
    new and yields exactly the events already stored (deterministic ids and content), so the
    append is an idempotent no-op. Nothing is written twice, but the turn is counted as
    admitted rather than as a duplicate, and the memo it leaves is wrong — which the next
    append to that stream detects as a conflict.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._memos: OrderedDict[Key, _Memo] = OrderedDict()

    def get(self, key: Key) -> _Memo | None:
        memo = self._memos.get(key)
        if memo is not None:
            self._memos.move_to_end(key)
        return memo

    def put(self, key: Key, memo: _Memo) -> None:
        if self.size <= 0:
            return
        self._memos[key] = memo
        self._memos.move_to_end(key)
        while len(self._memos) > self.size:
            self._memos.popitem(last=False)

    def forget(self, key: Key) -> None:
        self._memos.pop(key, None)


@dataclass(slots=True)
class _Sub:
    config: ConsumerConfig
    subscription: Subscription | None = None


class _GroupCommit:
    """Group commit: appends from concurrent workers share one ``store.append_many``.

    PostgreSQL appends are serialized store-wide (the position lock is held across each
    commit), so one transaction per reconcile caps throughput at one WAL flush per
    reconcile. Workers hand their append here and wait; one flusher task sends whatever
    has queued up as one ``append_many`` — one flush for the lot — while the next batch
    gathers. Each append keeps its own expected version and outcome. Adaptive: an idle
    system commits a lone append at once; a busy one commits in batches.
    """

    def __init__(self, store: EventStore, stats: RuntimeStats, max_batch: int) -> None:
        self.store = store
        self.stats = stats
        self.max_batch = max_batch
        self._queue: list[tuple[list[Event], int, asyncio.Future[list[Event]]]] = []
        self._wake = asyncio.Event()

    async def append(self, events: list[Event], expected_version: int) -> list[Event]:
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append((events, expected_version, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        """The flusher; runs until cancelled (after the workers are done)."""
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    results = await self.store.append_many([(e, v) for e, v, _ in batch])
                except Exception as exc:
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except asyncio.CancelledError:
                    self._fail(batch, "the runtime stopped while appending; outcome unknown")
                    raise
                self.stats.commits += 1
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, list):
                        future.set_result(result)
                    else:
                        future.set_exception(result)
        finally:
            self._fail(self._queue, "the runtime stopped before this append was sent")
            self._queue.clear()

    @staticmethod
    def _fail(batch: list[tuple[list[Event], int, asyncio.Future[list[Event]]]], why: str) -> None:
        for _, _, future in batch:
            if not future.done():
                future.set_exception(StoreUnavailableError(why))


# -- the runtime --------------------------------------------------------------------------


class ControllerRuntime:
    """Runs the registered controllers against one store and one bus.

    Parameters (all keyword-only except ``store`` and ``bus``):

    - ``registry``: specs and controllers (default: the process-wide registry);
      ``controllers``: explicit controller instances instead of the registry's.
    - ``settings``: ``RuntimeSettings`` (``max_concurrency``, backoff, ``max_attempts``,
      ``shutdown_grace``); explicit ``retry`` / ``max_concurrency`` / ``shutdown_grace``
      win over it. Without either the backoff is ``DEFAULT_RETRY``.
    - ``tenant``: serve one tenant only (subject filters ``eventplane.<tenant>.…``);
      None serves every tenant.
    - ``durable_prefix``: names of the durable consumers (default ``eventplane-runtime``,
      plus ``-<tenant>`` when scoped); every runtime process sharing it competes for work.
    - ``batch_size``, ``fetch_timeout``, ``max_inflight``, ``ack_wait``: delivery tuning.
    - ``max_conflict_retries``: re-decisions after a concurrency conflict before naking.
    - ``timer_scan_interval``: seconds between store scans for peers' timers (None: only
      at start).
    - ``trusted_keys`` / ``policy``: every intent's signature / authorization is checked
      and a failing intent is rejected (``SignatureInvalid`` / ``Forbidden``). Both are
      required (zero trust: the runtime re-checks what the edge checked);
      ``eventplane.runner`` builds them from settings. ``insecure_skip_verification=True``
      is the explicit, loud way to run without them (tests, benchmarks).
    - ``holder_id``: this process's name in logs (default ``host:pid:uuid``).
    """

    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        *,
        registry: Registry | None = None,
        controllers: Sequence[Controller] | None = None,
        settings: RuntimeSettings | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        shutdown_grace: float | None = None,
        tenant: str | None = None,
        durable_prefix: str | None = None,
        batch_size: int = 100,
        fetch_timeout: float = 1.0,
        max_inflight: int | None = None,
        ack_wait: float = 30.0,
        max_conflict_retries: int = 8,
        timer_scan_interval: float | None = 5.0,
        trusted_keys: TrustedKeys | None = None,
        policy: Policy | None = None,
        insecure_skip_verification: bool = False,
        holder_id: str | None = None,
    ) -> None:
        if (trusted_keys is None or policy is None) and not insecure_skip_verification:
            raise ConfigError(
                "ControllerRuntime needs trusted_keys and policy to verify every intent "
                "(build them with eventplane.security.trusted_keys_from_settings / "
                "policy_from_settings, as eventplane.runner does); pass "
                "insecure_skip_verification=True only where unsigned intents are intended"
            )
        if insecure_skip_verification:
            log.warning(
                "controller runtime started WITHOUT signature/policy verification "
                "(insecure_skip_verification=True)"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if fetch_timeout <= 0 or ack_wait <= 0:
            raise ValueError("fetch_timeout and ack_wait must be positive seconds")
        if max_conflict_retries < 1:
            raise ValueError("max_conflict_retries must be at least 1")
        if timer_scan_interval is not None and timer_scan_interval <= 0:
            raise ValueError("timer_scan_interval must be positive seconds (or None)")
        self.store = store
        self.bus = bus
        self.registry = registry if registry is not None else get_default_registry()
        if retry is None and settings is not None:
            retry = RetryPolicy(
                base=timedelta(seconds=settings.backoff_base),
                cap=timedelta(seconds=settings.backoff_cap),
                max_attempts=settings.max_attempts,
            )
        self.retry = retry if retry is not None else DEFAULT_RETRY
        self.max_concurrency = max_concurrency or (settings.max_concurrency if settings else 32)
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.shutdown_grace = (
            shutdown_grace
            if shutdown_grace is not None
            else (settings.shutdown_grace if settings else 30.0)
        )
        self.tenant = tenant
        self.durable_prefix = durable_prefix or (
            f"eventplane-runtime-{tenant}" if tenant else "eventplane-runtime"
        )
        self.batch_size = batch_size
        self.fetch_timeout = fetch_timeout
        self.max_inflight = max_inflight or max(2 * batch_size, 4 * self.max_concurrency)
        self.ack_wait = ack_wait
        self.max_conflict_retries = max_conflict_retries
        self.timer_scan_interval = timer_scan_interval
        self.trusted_keys = trusted_keys
        self.policy = policy
        self.holder_id = holder_id or f"{socket.gethostname()}:{os.getpid()}:{uuid7()}"
        self.stats = RuntimeStats()

        instances = (
            list(controllers)
            if controllers is not None
            else [cls() for cls in self.registry.controllers()]
        )
        self._controllers: dict[str, list[Controller]] = {}
        for ctrl in instances:
            self._controllers.setdefault(ctrl.KIND, []).append(ctrl)
        self._watchers: list[Controller] = []  # controllers woken by non-intent events
        filters: list[str] = [subject_filter(tenant, None, Category.INTENT)]
        for ctrl in instances:
            for watch in ctrl.watches():
                cats = watch.categories or (Category.INTERNAL, Category.FACT)
                if Category.INTENT in cats and watch.kind not in (None, ctrl.KIND):
                    log.warning(
                        "runtime: %s watches %s intents; intents only wake the controllers of "
                        "their own kind (watch that kind's facts instead)",
                        type(ctrl).__name__,
                        watch.kind,
                    )
                other = [c for c in cats if c is not Category.INTENT]
                if other and ctrl not in self._watchers:
                    self._watchers.append(ctrl)
                for cat in other:
                    flt = subject_filter(tenant, watch.kind, cat)
                    if flt not in filters:
                        filters.append(flt)
        self._subs = [
            _Sub(
                ConsumerConfig(
                    durable=self._durable_for(flt, index),
                    filter_subject=flt,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=ack_wait,
                    max_ack_pending=max(1000, 2 * self.max_inflight),
                )
            )
            for index, flt in enumerate(filters)
        ]
        timer_kinds = sorted(set(self.registry.kinds()) | set(self._controllers))
        self._timer_filter = EventFilter(
            tenant=tenant,
            types=tuple(
                f"{kind}.{reason}"
                for kind in timer_kinds
                for reason in ("RequeueScheduled", "RequeueCleared", "Deleted")
            ),
        )

        # The keyed work queue.
        self._pending: dict[Key, _Work] = {}
        self._processing: set[Key] = set()
        self._ready: asyncio.Queue[Key | None] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._room = asyncio.Event()
        self._room.set()
        # Timers: heap of (due, seq, key) plus the earliest due per key.
        self._timers: list[tuple[datetime, int, Key]] = []
        self._timer_due: dict[Key, datetime] = {}
        self._timer_seq = 0
        self._timer_changed = asyncio.Event()
        self._scan_cursor = 0
        self._stopping = False
        self._started = False
        self._error_delay: dict[Key, float] = {}
        self._commits = _GroupCommit(store, self.stats, max_batch=max(self.max_concurrency, 8))
        self._memo = _StreamMemo(_STREAM_MEMO_SIZE)

    # -- public API --------------------------------------------------------------------------

    @property
    def consumer_configs(self) -> list[ConsumerConfig]:
        """The durable consumers this runtime uses (for operators and test cleanup)."""
        return [s.config for s in self._subs]

    @property
    def pending_timers(self) -> dict[Key, datetime]:
        """Resources with a timer scheduled in this process, and when it is due."""
        return dict(self._timer_due)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Reconcile until ``stop_event`` is set, then shut down within ``shutdown_grace``.

        On stop: no more fetching; work not yet started is handed back to the bus (nak) so
        a peer can take it at once; work in progress may finish for ``shutdown_grace``
        seconds and is then cancelled and handed back. Subscriptions are closed; the store
        and the bus are the caller's to close.
        """
        await self._start()
        workers = self._start_workers()
        feeders = [
            asyncio.create_task(self._fetch_loop(sub), name=f"runtime-fetch-{sub.config.durable}")
            for sub in self._subs
        ]
        feeders.append(asyncio.create_task(self._timer_loop(), name="runtime-timers"))
        if self.timer_scan_interval is not None:
            feeders.append(asyncio.create_task(self._scan_loop(), name="runtime-timer-scan"))
        log.info(
            "runtime %s: running %d controller(s) for %s with %d workers",
            self.holder_id,
            sum(len(c) for c in self._controllers.values()),
            ", ".join(sorted(self._controllers)) or "no kinds",
            self.max_concurrency,
        )
        stop_wait = asyncio.create_task(stop_event.wait(), name="runtime-stop-wait")
        try:
            done, _ = await asyncio.wait({stop_wait, *feeders}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop_wait:
                    task.result()  # a feeder only ends by raising: a bug, let it surface
        finally:
            stop_wait.cancel()
            await self._shutdown(workers, [*feeders, stop_wait])

    async def run_until_idle(
        self,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (a bounded drive, like the port's fetch)
        timer_horizon: float = 0.0,
    ) -> RuntimeStats:
        """Process everything available now and return (``apply --wait`` with no worker).

        Fetches until every subscription comes back empty, all work is done and no timer
        is due within ``timer_horizon`` seconds (timers due sooner are waited for and
        fired). Raises WaitTimeoutError when ``timeout`` seconds pass first; work in
        progress is then handed back like at shutdown. Returns the runtime's stats.
        """
        await self._start()
        workers = self._start_workers()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                fetched = 0
                for sub in self._subs:
                    assert sub.subscription is not None
                    while True:
                        if self._inflight >= self.max_inflight:
                            await self._wait_idle(deadline)
                        want = min(self.batch_size, self.max_inflight - self._inflight)
                        got = await sub.subscription.fetch(
                            want, timeout=min(self.fetch_timeout, 0.05)
                        )
                        await self._dispatch_all(got)
                        fetched += len(got)
                        if len(got) < want:
                            break
                fired = self._fire_due_timers()
                await self._wait_idle(deadline)
                if fetched or fired:
                    continue
                nxt = self._next_timer_in()
                if nxt is None or nxt > timer_horizon:
                    return self.stats
                await self._sleep_until(nxt, deadline)
        finally:
            await self._shutdown(workers, [])

    # -- start / stop --------------------------------------------------------------------------

    async def _start(self) -> None:
        if self._started:
            raise RuntimeError("a ControllerRuntime runs once; build a new one to run again")
        self._started = True
        for sub in self._subs:
            sub.subscription = await self.bus.subscribe(sub.config)
        await self._scan_timers()

    def _start_workers(self) -> list[asyncio.Task[None]]:
        """The worker pool; the last task is the group-commit flusher."""
        workers = [
            asyncio.create_task(self._worker(), name=f"runtime-worker-{i}")
            for i in range(self.max_concurrency)
        ]
        workers.append(asyncio.create_task(self._commits.run(), name="runtime-commits"))
        return workers

    async def _shutdown(
        self, pool: list[asyncio.Task[None]], feeders: list[asyncio.Task[Any]]
    ) -> None:
        workers, flusher = pool[:-1], pool[-1]
        self._stopping = True
        for task in feeders:
            task.cancel()
        if feeders:
            # Bounded: a client library that swallows a cancellation must not turn a
            # shutdown into a hang (the loops also check ``_stopping``).
            _, stuck = await asyncio.wait(feeders, timeout=max(1.0, self.shutdown_grace))
            if stuck:
                log.error(
                    "runtime %s: %d fetch loop(s) ignored cancellation: %s",
                    self.holder_id,
                    len(stuck),
                    sorted(t.get_name() for t in stuck),
                )
        # Work that has not started goes back to the bus now.
        released = [w for k, w in self._pending.items() if k not in self._processing]
        for key in [k for k in self._pending if k not in self._processing]:
            del self._pending[key]
        for work in released:
            for ticket in work.tickets():
                await self._release(ticket, _RELEASE_DELAY)
        for _ in workers:
            self._ready.put_nowait(None)
        if workers:
            _, late = await asyncio.wait(workers, timeout=self.shutdown_grace)
            if late:
                log.warning(
                    "runtime %s: %d reconcile(s) still running after %.1fs; cancelling "
                    "(their deliveries are handed back)",
                    self.holder_id,
                    len(late),
                    self.shutdown_grace,
                )
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        flusher.cancel()  # only now: workers finishing within the grace need it
        await asyncio.gather(flusher, return_exceptions=True)
        for work in list(self._pending.values()):  # arrived for keys that were in progress
            for ticket in work.tickets():
                await self._release(ticket, _RELEASE_DELAY)
        self._pending.clear()
        for sub in self._subs:
            if sub.subscription is not None:
                with contextlib.suppress(UnavailableError, BusError):
                    await sub.subscription.close()
        log.info("runtime %s: stopped", self.holder_id)

    # -- feeding -------------------------------------------------------------------------------

    async def _fetch_loop(self, sub: _Sub) -> None:
        failures = 0
        while not self._stopping:
            while self._inflight >= self.max_inflight:
                self._room.clear()
                await self._room.wait()
            room = self.max_inflight - self._inflight
            try:
                if sub.subscription is None:
                    sub.subscription = await self.bus.subscribe(sub.config)
                deliveries = await sub.subscription.fetch(
                    min(self.batch_size, room), timeout=self.fetch_timeout
                )
            except (UnavailableError, BusError) as exc:
                if self._stopping:
                    return
                failures += 1
                delay = min(5.0, 0.05 * 2**failures)
                if failures == 1:
                    log.warning(
                        "runtime %s: fetching %s failed (%s); retrying every <=5s",
                        self.holder_id,
                        sub.config.durable,
                        exc,
                    )
                if failures >= 3 and sub.subscription is not None:
                    # A subscription that keeps failing may be gone for good: bind again.
                    with contextlib.suppress(UnavailableError, BusError):
                        await sub.subscription.close()
                    sub.subscription = None
                await asyncio.sleep(delay)
                continue
            if failures:
                log.warning(
                    "runtime %s: fetching %s works again", self.holder_id, sub.config.durable
                )
                failures = 0
            if self._stopping:
                for delivery in deliveries:  # fetched as the stop came: hand back at once
                    with contextlib.suppress(UnavailableError, BusError):
                        await delivery.nak()
                return
            await self._dispatch_all(deliveries)

    async def _dispatch_all(self, deliveries: Sequence[Delivery]) -> None:
        """Put each delivery on the work queue of every key it wakes."""
        unwanted: list[_Ticket] = []
        refused: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            self.stats.deliveries += 1
            event = delivery.event
            try:
                check_subject_tenant(delivery.subject, event)
            except SubjectMismatchError as exc:
                # Never written anywhere: recording it would put a fact into the stream
                # of the tenant the sender impersonates.
                refused.append((delivery, str(exc)))
                continue
            self._inflight += 1
            if event.category is Category.INTENT:
                self._work(event.stream).intents.append(_Ticket(delivery, 1))
                continue
            keys = self._targets(event)
            ticket = _Ticket(delivery, max(1, len(keys)))
            if not keys:
                unwanted.append(ticket)  # the filter matched, but no controller wants the type
            for key in keys:
                self._work(key).watched.append(ticket)
        for ticket in unwanted:
            await self._settle(ticket, ok=True)
        for delivery, why in refused:
            self.stats.terminated += 1
            log.error(
                "runtime %s: refused event %s: %s",
                self.holder_id,
                delivery.event.id,
                why,
                extra=_log_fields(delivery.event, "refused", reason="SubjectMismatch"),
            )
            with contextlib.suppress(UnavailableError, BusError):
                await delivery.term()

    def _targets(self, event: Event) -> list[Key]:
        keys: list[Key] = []
        for ctrl in self._watchers:
            if ctrl.wants(event):
                key = (event.tenant, ctrl.KIND, event.name)
                if key not in keys:
                    keys.append(key)
        return keys

    def _work(self, key: Key) -> _Work:
        work = self._pending.get(key)
        if work is None:
            work = self._pending[key] = _Work()
        if not work.queued and key not in self._processing:
            work.queued = True
            self._idle.clear()
            self._ready.put_nowait(key)
        return work

    # -- timers --------------------------------------------------------------------------------

    def _schedule(self, key: Key, due: datetime) -> None:
        current = self._timer_due.get(key)
        if current is not None and current <= due:
            return  # an earlier check will see the later due time and reschedule
        self._timer_due[key] = due
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, key))
        if self._timers[0][2] == key:
            self._timer_changed.set()

    def _fire_due_timers(self, *, horizon: float = 0.0) -> int:
        now = utcnow().timestamp() + horizon
        fired = 0
        while self._timers and self._timers[0][0].timestamp() <= now:
            due, _, key = heapq.heappop(self._timers)
            if self._timer_due.get(key) != due:
                continue  # superseded by an earlier schedule for the same key
            del self._timer_due[key]
            self._work(key).timer = True
            fired += 1
        return fired

    def _next_timer_in(self) -> float | None:
        while self._timers and self._timer_due.get(self._timers[0][2]) != self._timers[0][0]:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0].timestamp() - utcnow().timestamp())

    async def _timer_loop(self) -> None:
        while True:
            self._fire_due_timers()
            wait = self._next_timer_in()
            self._timer_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._timer_changed.wait(), timeout=min(wait if wait is not None else 60, 60)
                )

    async def _scan_loop(self) -> None:
        assert self.timer_scan_interval is not None
        while True:
            await asyncio.sleep(self.timer_scan_interval)
            try:
                await self._scan_timers()
            except (UnavailableError, StoreError) as exc:
                log.warning(
                    "runtime %s: timer scan failed (%s); trying again in %.0fs",
                    self.holder_id,
                    exc,
                    self.timer_scan_interval,
                )

    async def _scan_timers(self) -> None:
        """Schedule every timer the store says is pending (after the last scan)."""
        latest: dict[Key, Event] = {}
        while True:
            # The horizon before reading: a short batch proves nothing matching lies at or
            # below it, so the cursor may jump there. (Without this the cursor stayed at the
            # last timer event and every scan re-filtered everything appended since.)
            horizon = await self.store.last_position()
            batch = await self.store.read_all(
                after=self._scan_cursor, limit=1000, filter=self._timer_filter
            )
            for event in batch:
                latest[event.stream] = event
            if batch:
                self._scan_cursor = batch[-1].metadata.position or self._scan_cursor
            if len(batch) < 1000:
                self._scan_cursor = max(self._scan_cursor, horizon)
                break
        for key, event in latest.items():
            if event.reason == "RequeueScheduled":
                due = event.data.get("due_at")
                if isinstance(due, str):
                    self._schedule(key, parse_time(due))

    # -- workers -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            if key is None:
                return
            work = self._pending.pop(key, None)
            if work is None:
                self._maybe_idle()
                continue
            self._processing.add(key)
            try:
                await self._handle(key, work)
            except Exception:
                # A bug (ours or a store invariant) must not kill the worker: log it and
                # hand the deliveries back with a delay, like any other failed turn.
                self.stats.errors += 1
                log.exception(
                    "runtime %s: handling %s failed unexpectedly", self.holder_id, stream_id(*key)
                )
                await self._give_back(key, work, _MAX_ERROR_NAK_DELAY)
            finally:
                self._processing.discard(key)
                again = self._pending.get(key)
                if again is not None and not self._stopping:
                    again.queued = True
                    self._ready.put_nowait(key)
                self._maybe_idle()

    def _maybe_idle(self) -> None:
        if not self._processing and not any(w.queued for w in self._pending.values()):
            self._idle.set()

    async def _wait_idle(self, deadline: float | None) -> None:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=_remaining(deadline))
        except TimeoutError:
            raise WaitTimeoutError(
                "the runtime did not finish the available work in time; raise the timeout "
                "or start `evtctl run`"
            ) from None

    async def _sleep_until(self, seconds: float, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() + seconds > deadline:
            raise WaitTimeoutError("a scheduled reconcile falls after the wait's timeout")
        await asyncio.sleep(seconds)

    async def _handle(self, key: Key, work: _Work) -> None:
        tickets = work.tickets()
        started = time.perf_counter()
        try:
            for attempt in range(1, self.max_conflict_retries + 1):
                try:
                    result = await self._attempt(key, work, first=attempt == 1)
                except (ConcurrencyError, ConflictError) as exc:
                    self.stats.conflicts += 1
                    log.debug(
                        "runtime: %s conflict #%d (%s); deciding again",
                        stream_id(*key),
                        attempt,
                        exc,
                    )
                    continue
                self._error_delay.pop(key, None)
                self._finish(key, result, time.perf_counter() - started)
                for ticket in tickets:
                    await self._settle(ticket, ok=True)
                return
            log.warning(
                "runtime %s: %s still conflicts after %d attempts; handing its %d "
                "delivery(ies) back for later",
                self.holder_id,
                stream_id(*key),
                self.max_conflict_retries,
                len(tickets),
            )
            await self._give_back(key, work, _CONFLICT_NAK_DELAY)
        except (UnavailableError, StoreError, BusError) as exc:
            self.stats.errors += 1
            delay = min(self._error_delay.get(key, _ERROR_NAK_DELAY / 2) * 2, _MAX_ERROR_NAK_DELAY)
            self._error_delay[key] = delay
            log.warning(
                "runtime %s: %s failed (%s); retrying in %.1fs",
                self.holder_id,
                stream_id(*key),
                exc,
                delay,
            )
            await self._give_back(key, work, delay)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: the append may or may not have happened; either
            # way a redelivery is safe (the intent id is then found in the stream).
            for ticket in tickets:
                await self._release(ticket, _RELEASE_DELAY)
            raise

    async def _give_back(self, key: Key, work: _Work, delay: float) -> None:
        for ticket in work.tickets():
            await self._settle(ticket, ok=False, delay=delay)
        if work.timer and not self._stopping:
            self._schedule(key, utcnow() + timedelta(seconds=delay))

    async def _release(self, ticket: _Ticket, delay: float) -> None:
        """Hand a delivery back now, whatever the other keys it woke are doing."""
        if not ticket.done:
            ticket.remaining = 1
            await self._settle(ticket, ok=False, delay=delay)

    async def _settle(self, ticket: _Ticket, *, ok: bool, delay: float = 0.0) -> None:
        """One key is done with ``ticket``; the last one acks (or naks if any failed)."""
        if ticket.done:
            return
        if not ok:
            ticket.failed = True
            ticket.nak_delay = max(ticket.nak_delay, delay)
        ticket.remaining -= 1
        if ticket.remaining > 0:
            return
        ticket.done = True
        try:
            if ticket.failed:
                self.stats.released += 1
                await ticket.delivery.nak(ticket.nak_delay or None)
            else:
                await ticket.delivery.ack()
        except (UnavailableError, BusError) as exc:
            # The bus will redeliver after ack_wait; the stream check makes that harmless.
            log.warning(
                "runtime %s: could not settle event %s (%s)",
                self.holder_id,
                ticket.delivery.event.id,
                exc,
            )
        finally:
            self._inflight -= 1
            if self._inflight < self.max_inflight:
                self._room.set()

    # -- one turn of one key ----------------------------------------------------------------------

    async def _attempt(self, key: Key, work: _Work, *, first: bool) -> _Result:
        """One turn. The first try of a turn triggered only by intents skips reading the
        stream: it decides on the memo (see ``_StreamMemo``) and lets the append check it;
        if that conflicts — and on every later try — it decides on a fresh read."""
        if first and work.intents and not work.watched and not work.timer:
            memo = self._memo.get(key) or _Memo(ResourceState.empty(*key), set(), None)
            try:
                return await self._decide(key, work, memo, [])
            except ConflictError as exc:  # includes ConcurrencyError, DuplicateEventError
                self._memo.forget(key)
                self.stats.conflicts += 1
                log.debug("runtime: %s changed elsewhere (%s); reading it", stream_id(*key), exc)
            except BaseException:
                self._memo.forget(key)
                raise
        events = await self.store.read_stream(*key)
        memo = _Memo(
            fold(events, initial=ResourceState.empty(*key)),
            {e.id for e in events},
            max(
                (e.metadata.occurred_at for e in events if e.category is Category.INTENT),
                default=None,
            ),
        )
        try:
            return await self._decide(key, work, memo, events)
        except BaseException:
            self._memo.forget(key)
            raise

    async def _decide(self, key: Key, work: _Work, memo: _Memo, events: list[Event]) -> _Result:
        """Decide and append one turn on ``memo``'s view of the stream (``events``: the
        stream as read, needed only by a timer turn)."""
        state = memo.state
        expected = state.version
        known = set(memo.known)
        last_intent_at = memo.last_intent_at
        result = _Result(state=state)
        out: list[Event] = []

        for ticket in sorted(work.intents, key=lambda t: t.delivery.event.metadata.occurred_at):
            intent = ticket.delivery.event
            # (A new stream cannot hold it: skip hashing the rejection id then.)
            if intent.id in known or (known and rejection_id(intent) in known):
                result.duplicates += 1
                continue
            known.add(intent.id)
            ctx = ReconcileContext.for_trigger(intent, retry=self.retry)
            problem = self._check_intent(intent)
            if (
                problem is None
                and last_intent_at is not None
                and (intent.metadata.occurred_at < last_intent_at)
            ):
                problem = (
                    "Superseded",
                    f"a newer intent for {intent.kind} {intent.name!r} (at "
                    f"{last_intent_at.isoformat()}) was already applied; apply again to "
                    "override it",
                )
            if problem is not None:
                new = reject_intent(state, intent, problem[0], problem[1], ctx)
                result.rejected.append((intent, *problem))
            else:
                new = admit_intent(state, intent, ctx)
                if new[0].id == intent.id:
                    result.trigger = new[0]
                    result.admitted += 1
                    last_intent_at = intent.metadata.occurred_at
                else:
                    data = new[0].data
                    result.rejected.append(
                        (intent, str(data.get("reason")), str(data.get("message")))
                    )
            for event in new:
                state = evolve(state, event)
            out.extend(new)

        controllers = self._controllers.get(key[1], [])
        trigger = result.trigger
        now: datetime | None = None
        if trigger is None and work.watched:
            trigger = work.watched[-1].delivery.event
            controllers = [c for c in controllers if c.wants(trigger)]
            if not controllers:
                trigger = None
        due = state.requeue_at
        if trigger is None and work.timer and due is not None and due <= utcnow():
            # The event that set the timer is the trigger; its due time is "now".
            trigger = next(
                (
                    e
                    for e in reversed(events)
                    if e.reason == "RequeueScheduled" and e.category is Category.INTERNAL
                ),
                None,
            )
            now = due
            result.timer_fired = trigger is not None

        if trigger is not None:
            ctx = ReconcileContext.for_trigger(
                trigger, now=now, attempt=state.status.attempts + 1, retry=self.retry
            )
            if not controllers:
                # No controller for this kind: still record what the intent implies
                # (a deletion with no finalizers becomes Deleted).
                new = apply_decision(state, trigger, ControllerDecision.nothing(), ctx)
                for event in new:
                    state = evolve(state, event)
                out.extend(new)
            for ctrl in controllers:
                outcome_label: str
                try:
                    decision = ctrl.reconcile(trigger, state, ctx)
                    outcome_label = decision.outcome.value
                except Exception as exc:
                    decision = ControllerDecision.from_exception(exc)
                    outcome_label = "error"
                    log.warning(
                        "runtime: %s.reconcile raised for %s: %s",
                        type(ctrl).__name__,
                        stream_id(*key),
                        exc,
                        exc_info=not isinstance(exc, ReconcileError),
                    )
                new = apply_decision(state, trigger, decision, ctx)
                for event in new:
                    state = evolve(state, event)
                out.extend(new)
                result.outcomes.append((type(ctrl).__name__, outcome_label))
        result.trigger = trigger

        if out:
            result.appended = await self._commits.append(out, expected)
            last = result.appended[-1].metadata.stream_version
            if last == state.version:  # appended right after `expected`, as decided
                known.update(e.id for e in out)
                self._memo.put(key, _Memo(state, known, last_intent_at))
            else:  # an idempotent re-append: the stream may hold more than we know
                self._memo.forget(key)
        else:
            self._memo.put(key, _Memo(state, known, last_intent_at))
        result.state = state
        return result

    def _check_intent(self, intent: Event) -> tuple[str, str] | None:
        """Why the runtime refuses ``intent`` (reason, message), or None to admit it.
        (The subject/tenant check already ran at dispatch.)"""
        try:
            spec_cls = self.registry.spec_for(intent.kind)
        except UnknownKindError as exc:
            return "UnknownKind", f"{exc}; register a ResourceSpec for it or fix the kind"
        if intent.api_version != spec_cls.API_VERSION:
            return (
                "UnsupportedApiVersion",
                f"apiVersion {intent.api_version!r} is not served for kind {intent.kind}; "
                f"use {spec_cls.API_VERSION!r}",
            )
        if intent.reason == "Requested" and intent.spec is not None:
            try:
                spec_cls.model_validate(intent.spec)
            except pydantic.ValidationError as exc:
                problems = "; ".join(str(e) for e in validation_errors(spec_cls, exc))
                return (
                    "SpecInvalid",
                    f"{intent.kind} {intent.name!r} has an invalid spec: {problems}",
                )
        try:
            ensure_event_has_no_secret_material(intent)
        except SecretMaterialError as exc:
            return "SecretMaterial", str(exc)
        if self.trusted_keys is not None:
            try:
                verify_intent(intent, self.trusted_keys)
            except SignatureError as exc:
                return "SignatureInvalid", str(exc)
        if self.policy is not None and intent.reason in ("Requested", "DeletionRequested"):
            verb = "apply" if intent.reason == "Requested" else "delete"
            decision = self.policy.authorize(
                intent.metadata.actor, verb, intent.kind, intent.tenant
            )
            if not decision.allowed:
                return "Forbidden", decision.reason
        return None

    def _finish(self, key: Key, result: _Result, seconds: float) -> None:
        """Stats, logs and timers after a successful turn."""
        stats = self.stats
        kind = key[1]
        stats.admitted += result.admitted
        stats.duplicates += result.duplicates
        stats.events_appended += len(result.appended)
        if result.timer_fired:
            stats.timers_fired += 1
        written = result.appended
        for event in written:
            if event.reason == "ReconcileFailed":
                stats.failures[kind] += 1
            elif event.reason == "RequeueScheduled" and event.data.get("reason") == "Retry":
                stats.retries[kind] += 1
        for intent, reason, message in result.rejected:
            stats.rejections[(kind, reason)] += 1
            log.warning(
                "rejected %s %s/%s: %s: %s",
                intent.type,
                intent.tenant,
                intent.name,
                reason,
                message,
                extra=_log_fields(intent, "rejected", reason=reason),
            )
        if result.outcomes:
            stats.observe(kind, seconds)
            trigger = result.trigger
            assert trigger is not None
            for controller, outcome in result.outcomes:
                stats.reconciles[(kind, outcome)] += 1
                if log.isEnabledFor(logging.INFO):
                    log.info(
                        "reconciled %s/%s/%s: %s (%s, %d event(s), %.1f ms)",
                        key[0],
                        kind,
                        key[2],
                        outcome,
                        controller,
                        len(written),
                        seconds * 1000,
                        extra=_log_fields(
                            trigger,
                            outcome,
                            controller=controller,
                            events=len(written),
                            duration_ms=round(seconds * 1000, 3),
                            resource_key=key,
                        ),
                    )
        requeue_at = result.state.requeue_at
        if requeue_at is not None and (written or not result.timer_fired):
            self._schedule(key, requeue_at)

    def _durable_for(self, filter_subject: str, index: int) -> str:
        """``<prefix>-intents`` for the intents, ``<prefix>-watch-<kind>-<category>`` for
        each watch filter (durable names may not contain '.', '*' or '>')."""
        if index == 0:
            return f"{self.durable_prefix}-intents"
        _, _, kind, category = filter_subject.split(".")
        return f"{self.durable_prefix}-watch-{'all' if kind == '*' else kind}-{category}"


def _log_fields(event: Event, outcome: str, **more: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tenant": event.tenant,
        "kind": event.kind,
        "resource_name": event.name,
        "event_id": str(event.id),
        "event_type": event.type,
        "correlation_id": str(event.metadata.correlation_id),
        "outcome": outcome,
    }
    key = more.pop("resource_key", None)
    if key is not None:
        fields.update(tenant=key[0], kind=key[1], resource_name=key[2])
    fields.update(more)
    return fields


def _remaining(deadline: float | None) -> float:
    if deadline is None:
        return 3600.0
    return max(0.0, deadline - time.monotonic())
