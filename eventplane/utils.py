"""Small shared helpers: time, ids, names and canonical JSON.

Bottom of the layer stack (imported by everything, imports nothing of ours but
``errors``). Only the runtime edges (EventFactory, the CLI, the runtime's
``ReconcileContext``) may call ``utcnow``/``uuid7``; controllers take both from
their context so replay stays deterministic.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "DNS_LABEL_RE",
    "KIND_RE",
    "canonical_json",
    "format_time",
    "is_dns_label",
    "is_kind",
    "json_dumps",
    "json_loads",
    "parse_time",
    "utcnow",
    "uuid7",
    "uuid7_time",
]

# RFC 1123 label as Kubernetes uses it for names: lowercase alphanumerics and '-',
# starting and ending with an alphanumeric, at most 63 characters.
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Registered kinds are PascalCase identifiers, e.g. "Organization", "BillingAccount".
KIND_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")


def is_dns_label(value: str) -> bool:
    return bool(DNS_LABEL_RE.match(value))


def is_kind(value: str) -> bool:
    return bool(KIND_RE.match(value))


def utcnow() -> datetime:
    """Timezone-aware UTC now, microsecond precision (what every store keeps)."""
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 with microseconds and a ``Z`` suffix; round-trips through ``parse_time``."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: Eventplane only stores timezone-aware UTC times")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    """Parse RFC 3339 (``Z`` or an offset) into an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(
            f"time {value!r} has no UTC offset; use RFC 3339, e.g. 2026-01-01T00:00:00Z"
        )
    return parsed.astimezone(UTC)


_uuid7_lock = threading.Lock()
_uuid7_last_ms = 0
_uuid7_counter = 0


def uuid7() -> uuid.UUID:
    """A RFC 9562 UUIDv7: 48-bit Unix-ms timestamp, then a 12-bit counter, then randomness.

    Monotonic within a process (the counter, seeded randomly each millisecond, breaks ties
    and borrows the next millisecond on overflow), so ids sort in creation order —
    which is what makes them usable as time-ordered idempotency keys.
    """
    global _uuid7_last_ms, _uuid7_counter
    with _uuid7_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _uuid7_last_ms:
            _uuid7_last_ms = now_ms
            _uuid7_counter = int.from_bytes(os.urandom(2), "big") & 0x7FF  # leave headroom
        else:
            _uuid7_counter += 1
            if _uuid7_counter > 0xFFF:
                _uuid7_last_ms += 1
                _uuid7_counter = 0
        ms, counter = _uuid7_last_ms, _uuid7_counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= counter << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand
    return uuid.UUID(int=value)


def uuid7_time(value: uuid.UUID) -> datetime:
    """The creation time encoded in a UUIDv7 (millisecond precision)."""
    return datetime.fromtimestamp((value.int >> 80) / 1000, tz=UTC)


def json_dumps(value: Any) -> bytes:
    """Fast compact JSON (orjson); keys in insertion order."""
    return orjson.dumps(value)


def json_loads(value: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(value)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8. Used for signatures and
    content comparison (idempotent re-append), so it must never change shape."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
