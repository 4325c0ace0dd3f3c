"""Health probes and Prometheus metrics for a worker process (``evtctl run --health-port``).

Sits beside ``eventplane.runner`` (which calls it from ``run_workers``) and reads the
parts it runs: the ``ControllerRuntime``'s ``stats``, the ``Relay``, the
``ProjectionWorker``s, the store and the bus. Nothing here sits on a hot path: the
runtime counts in plain integers, and ``/metrics`` turns those counts (plus a few cheap
store queries for lag) into Prometheus text when it is scraped — a custom collector on
a dedicated ``CollectorRegistry``, so embedding processes keep their own default registry.

The HTTP server is a few lines over ``asyncio.start_server`` (one request per
connection, ``GET``/``HEAD`` only), so it shares the workers' event loop and needs no
framework:

- ``/healthz`` — 200 while the process serves requests (liveness: restart me if not);
- ``/readyz`` — 200 when the store answers a query, the bus answers a ping and every
  worker part is running; 503 with the failing checks otherwise, and from the moment
  shutdown starts (readiness: send me no traffic, count me out);
- ``/metrics`` — Prometheus text exposition (metric names below, all ``eventplane_*``).

Metrics: ``reconciles_total{kind,outcome}``, ``reconcile_duration_seconds{kind}``
(histogram), ``reconcile_retries_total{kind}``, ``reconcile_failures_total{kind}``,
``intent_rejections_total{kind,reason}``, ``runtime_<counter>_total`` for the runtime's
other counters, ``consumer_pending_messages{consumer}`` (undelivered + unacknowledged,
where the bus can tell), ``store_last_position``, ``relay_checkpoint``,
``relay_lag_events`` (last position - relay checkpoint), ``relay_active``,
``relay_published_total``, ``projection_checkpoint{projection}``,
``projection_lag_events{projection}``, ``projection_applied_total{projection}``,
``worker_part_running{part}``, ``scrape_errors_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from eventplane.bus import Bus, Relay
from eventplane.controller.runtime import ControllerRuntime
from eventplane.errors import EventplaneError
from eventplane.projection import ProjectionWorker
from eventplane.store import EventStore

__all__ = [
    "HEALTH_PATHS",
    "HealthServer",
    "WorkerSet",
    "metrics_registry",
]

log = logging.getLogger(__name__)

#: The paths the health server answers (deployment manifests' probes must use these).
HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")

_PROBE_TIMEOUT = 2.0  # seconds a readiness check may take before it counts as failed
_REQUEST_TIMEOUT = 5.0  # seconds to receive a request's head
_MAX_HEAD = 8192
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

# RuntimeStats' plain counters, exported as eventplane_runtime_<name>_total.
_RUNTIME_COUNTERS = {
    "deliveries": "Bus deliveries received by the controller runtime.",
    "admitted": "Intents stored.",
    "duplicates": "Deliveries of intents already stored or rejected.",
    "conflicts": "Optimistic-concurrency conflicts on append (then decided again).",
    "events_appended": "Events appended by the runtime.",
    "timers_fired": "Durable requeue timers fired.",
    "released": "Deliveries handed back to the bus (nak) after errors, conflicts or shutdown.",
    "errors": "Store/bus failures while handling a resource.",
    "terminated": "Deliveries refused outright (subject/tenant mismatch).",
    "commits": "Group commits (store.append_many calls).",
}


@dataclass
class WorkerSet:
    """What one worker process runs: the parts ``run_workers`` built, and their tasks
    (``tasks`` maps a part's name — ``runtime``, ``relay``, ``projection <NAME>``,
    ``presence`` — to the task running it; filled in once they start)."""

    store: EventStore
    bus: Bus
    runtime: ControllerRuntime | None = None
    relay: Relay | None = None
    projections: list[ProjectionWorker] = field(default_factory=list)
    tasks: Mapping[str, asyncio.Future[Any]] = field(default_factory=dict)
    stop_event: asyncio.Event | None = None

    def parts_running(self) -> dict[str, bool]:
        """Each part and whether its task is still running (False before it started)."""
        return {name: not task.done() for name, task in self.tasks.items()}


# -- metrics ----------------------------------------------------------------------------------


@dataclass
class _Readings:
    """What a scrape read from the store and bus (the async part of a scrape)."""

    last_position: int | None = None
    relay_checkpoint: int | None = None
    projection_checkpoints: dict[str, int] = field(default_factory=dict)
    consumer_pending: dict[str, int] = field(default_factory=dict)


class _Collector(Collector):
    """Turns the workers' counters and the latest ``_Readings`` into metric families."""

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers
        self.readings = _Readings()
        self.scrape_errors = 0

    def collect(self) -> Iterator[Any]:
        yield from self._runtime()
        yield from self._lag()
        parts = GaugeMetricFamily(
            "eventplane_worker_part_running",
            "1 while the worker part's task runs (runtime, relay, projection <NAME>, presence).",
            labels=["part"],
        )
        for name, running in sorted(self.workers.parts_running().items()):
            parts.add_metric([name], 1.0 if running else 0.0)
        yield parts
        errors = CounterMetricFamily(
            "eventplane_scrape_errors",
            "Scrapes where reading a lag from the store or bus failed (that reading is left out).",
        )
        errors.add_metric([], float(self.scrape_errors))
        yield errors

    def _runtime(self) -> Iterator[Any]:
        runtime = self.workers.runtime
        if runtime is None:
            return
        stats = runtime.stats
        reconciles = CounterMetricFamily(
            "eventplane_reconciles",
            "Controller reconciles by kind and outcome (done, requeue, retry, failed, error).",
            labels=["kind", "outcome"],
        )
        for (kind, outcome), n in sorted(stats.reconciles.items()):
            reconciles.add_metric([kind, outcome], float(n))
        yield reconciles
        duration = HistogramMetricFamily(
            "eventplane_reconcile_duration_seconds",
            "Seconds from reading a resource's stream to appending its new events.",
            labels=["kind"],
        )
        for kind, hist in sorted(stats.reconcile_seconds.items()):
            buckets = [
                (_bound(b), float(n)) for b, n in zip(hist.buckets, hist.counts[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(hist.counts[-1])))
            duration.add_metric([kind], buckets, sum_value=hist.sum)
        yield duration
        for name, counter, help_text in (
            ("eventplane_reconcile_retries", stats.retries, "Retry backoffs scheduled."),
            ("eventplane_reconcile_failures", stats.failures, "ReconcileFailed facts written."),
        ):
            family = CounterMetricFamily(name, help_text + " By kind.", labels=["kind"])
            for kind, n in sorted(counter.items()):
                family.add_metric([kind], float(n))
            yield family
        rejections = CounterMetricFamily(
            "eventplane_intent_rejections",
            "Intents rejected (IntentRejected facts) by kind and reason.",
            labels=["kind", "reason"],
        )
        for (kind, reason), n in sorted(stats.rejections.items()):
            rejections.add_metric([kind, reason], float(n))
        yield rejections
        for attr, help_text in _RUNTIME_COUNTERS.items():
            family = CounterMetricFamily(f"eventplane_runtime_{attr}", help_text)
            family.add_metric([], float(getattr(stats, attr)))
            yield family

    def _lag(self) -> Iterator[Any]:
        r = self.readings
        pending = GaugeMetricFamily(
            "eventplane_consumer_pending_messages",
            "Messages a durable consumer has not had acknowledged yet (undelivered + "
            "unacknowledged), where the bus can tell.",
            labels=["consumer"],
        )
        for durable, n in sorted(r.consumer_pending.items()):
            pending.add_metric([durable], float(n))
        yield pending
        if r.last_position is not None:
            yield _gauge(
                "eventplane_store_last_position",
                "Position of the newest event in the store.",
                r.last_position,
            )
        relay = self.workers.relay
        if relay is not None:
            yield _gauge(
                "eventplane_relay_active",
                "1 while this process holds the relay lease (others stand by).",
                1 if relay._active else 0,
            )
            published = CounterMetricFamily(
                "eventplane_relay_published", "Events this process's relay published."
            )
            published.add_metric([], float(relay.published))
            yield published
        if r.relay_checkpoint is not None:
            yield _gauge(
                "eventplane_relay_checkpoint",
                "Last store position the relay published (whichever process holds the lease).",
                r.relay_checkpoint,
            )
            if r.last_position is not None:
                yield _gauge(
                    "eventplane_relay_lag_events",
                    "Store positions not yet published: last position - relay checkpoint.",
                    max(0, r.last_position - r.relay_checkpoint),
                )
        checkpoint = GaugeMetricFamily(
            "eventplane_projection_checkpoint",
            "Last store position applied to the projection's read model.",
            labels=["projection"],
        )
        lag = GaugeMetricFamily(
            "eventplane_projection_lag_events",
            "Store positions the projection has not applied: last position - checkpoint.",
            labels=["projection"],
        )
        for name, position in sorted(r.projection_checkpoints.items()):
            checkpoint.add_metric([name], float(position))
            if r.last_position is not None:
                lag.add_metric([name], float(max(0, r.last_position - position)))
        yield checkpoint
        yield lag
        applied = CounterMetricFamily(
            "eventplane_projection_applied",
            "Events this process applied to the projection's read model.",
            labels=["projection"],
        )
        for worker in self.workers.projections:
            applied.add_metric([worker.name], float(worker.applied))
        yield applied


def _bound(value: float) -> str:
    return repr(float(value))


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=float(value))


def metrics_registry(workers: WorkerSet) -> tuple[CollectorRegistry, _Collector]:
    """A dedicated registry holding the workers' collector (and the collector itself,
    whose ``readings`` a scrape refreshes before rendering)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = _Collector(workers)
    registry.register(collector)
    return registry, collector


async def _read(workers: WorkerSet) -> tuple[_Readings, int]:
    """The store/bus readings for a scrape; returns them and how many reads failed."""
    readings = _Readings()
    failed = 0
    store = workers.store

    async def attempt(what: str, coro: Any) -> Any:
        nonlocal failed
        try:
            return await asyncio.wait_for(coro, _PROBE_TIMEOUT)
        except (EventplaneError, TimeoutError, OSError) as exc:
            failed += 1
            log.debug("metrics: reading %s failed: %s", what, exc)
            return None

    readings.last_position = await attempt("last position", store.last_position())
    if workers.relay is not None:
        readings.relay_checkpoint = await attempt(
            "relay checkpoint", store.load_checkpoint(workers.relay.name)
        )
    for worker in workers.projections:
        position = await attempt(f"projection {worker.name}", worker.checkpoint())
        if position is not None:
            readings.projection_checkpoints[worker.name] = position
    if workers.runtime is not None:
        for config in workers.runtime.consumer_configs:
            pending = await attempt(
                f"consumer {config.durable}", workers.bus.consumer_pending(config.durable)
            )
            if pending is not None:
                readings.consumer_pending[config.durable] = pending
    return readings, failed


# -- readiness --------------------------------------------------------------------------------


async def readiness(workers: WorkerSet) -> tuple[bool, dict[str, str]]:
    """Whether the process should receive work, and each check's result."""
    checks: dict[str, str] = {}
    stopping = workers.stop_event is not None and workers.stop_event.is_set()
    if stopping:
        checks["process"] = "shutting down"
    for name, probe in (("store", workers.store.last_position()), ("bus", workers.bus.ping())):
        try:
            await asyncio.wait_for(probe, _PROBE_TIMEOUT)
            checks[name] = "ok"
        except TimeoutError:
            checks[name] = f"no answer within {_PROBE_TIMEOUT:g}s"
        except (EventplaneError, OSError) as exc:
            checks[name] = f"unreachable: {exc}"
    parts = workers.parts_running()
    if not parts:
        checks["workers"] = "not started"
    for name, running in parts.items():
        checks[name] = "running" if running else "stopped"
    ready = not stopping and all(v in ("ok", "running") for v in checks.values())
    return ready, checks


# -- the HTTP server --------------------------------------------------------------------------


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` over HTTP/1.1 for one ``WorkerSet``.

    ``port=0`` picks a free port (read ``port`` after ``start``). Use as an async context
    manager or call ``start``/``close``.
    """

    def __init__(self, workers: WorkerSet, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.workers = workers
        self.host = host
        self._port = port
        self.registry, self._collector = metrics_registry(workers)
        self._server: asyncio.Server | None = None
        self._scrape_lock = asyncio.Lock()
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self._port)
        except OSError as exc:
            from eventplane.errors import ConfigError

            raise ConfigError(
                f"cannot serve health checks on {self.host}:{self._port}: {exc.strerror}; "
                "choose another --health-port (or --health-host)"
            ) from exc
        log.info(
            "health server on http://%s:%d (%s)", self.host, self.port, ", ".join(HEALTH_PATHS)
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def metrics(self) -> bytes:
        """The Prometheus text exposition for a scrape now."""
        async with self._scrape_lock:  # one scrape's readings at a time
            readings, failed = await _read(self.workers)
            self._collector.readings = readings
            self._collector.scrape_errors += failed
            return generate_latest(self.registry)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away or stalled: nothing to answer
        except asyncio.LimitOverrunError:
            with contextlib.suppress(ConnectionError):
                await _write(writer, 431, b"request head too large\n", "text/plain")
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT)
        if len(head) > _MAX_HEAD:
            raise asyncio.LimitOverrunError("request head too large", len(head))
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            await _write(
                writer, 405, b"only GET and HEAD\n", "text/plain", extra={"Allow": "GET, HEAD"}
            )
            return
        body_wanted = method == "GET"
        if path == "/healthz":
            await _write(writer, 200, b"ok\n", "text/plain", body=body_wanted)
        elif path == "/readyz":
            ready, checks = await readiness(self.workers)
            payload = orjson.dumps({"ready": ready, "checks": checks}) + b"\n"
            await _write(
                writer, 200 if ready else 503, payload, "application/json", body=body_wanted
            )
        elif path == "/metrics":
            await _write(writer, 200, await self.metrics(), _PROMETHEUS_TEXT, body=body_wanted)
        else:
            await _write(
                writer,
                404,
                b"not found; try " + " ".join(HEALTH_PATHS).encode() + b"\n",
                "text/plain",
                body=body_wanted,
            )


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


async def _write(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    content_type: str,
    *,
    body: bool = True,
    extra: Mapping[str, str] | None = None,
) -> None:
    headers = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
    if body:
        writer.write(payload)
    await writer.drain()
