"""Process-wide log set-up: JSON lines for machines, readable lines for people.

Bottom layer (beside ``utils``/``config``; imports nothing from Eventplane). ``evtctl``
calls ``configure_logging`` once at start-up; embedders may call it too or keep their
own logging — the library itself only ever logs through ``logging.getLogger(__name__)``.

The library attaches an event's identity to its log records as ``extra=`` keys
(``tenant``, ``kind``, ``resource_name``, ``event_id``, ``event_type``, ``correlation_id``,
``outcome``, …; ``eventplane.controller.runtime`` does so on every line about an event).
``JsonFormatter`` writes one JSON object per record with those keys at the top level
(``resource_name`` as ``name``, the logger as ``logger``), so a log pipeline can index and
join on them; ``TextFormatter`` appends them as ``key=value`` pairs.

JSON is chosen when stderr is not a terminal (containers, pipes), text otherwise;
``EVENTPLANE_LOG_FORMAT=json|text`` forces one.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
from typing import Any, TextIO

import orjson

__all__ = [
    "EVENT_FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "level_for",
]

#: ``extra=`` keys that identify what a line is about, in output order.
EVENT_FIELDS = (
    "tenant",
    "kind",
    "resource_name",
    "event_id",
    "event_type",
    "correlation_id",
    "outcome",
)
_RENAMED = {"resource_name": "name"}  # ``name`` is taken on LogRecord (the logger's name)

# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_STANDARD = frozenset(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra=`` fields: event identity first, then the rest as given."""
    found = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    ordered: dict[str, Any] = {}
    for key in EVENT_FIELDS:
        if key in found:
            ordered[_RENAMED.get(key, key)] = found.pop(key)
    for key, value in found.items():
        ordered[_RENAMED.get(key, key)] = value
    return ordered


def _json_default(value: Any) -> str:
    return str(value)  # UUIDs are native to orjson; tuples, paths, enums… as text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the
    ``extra=`` fields (event identity first) and ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message [key=value …]`` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if not extras:
            return text
        pairs = " ".join(f"{k}={v}" for k, v in extras.items())
        first, sep, rest = text.partition("\n")  # keep a traceback below the pairs
        return f"{first} [{pairs}]{sep}{rest}"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always the current sys.stderr


def level_for(verbose: int) -> int:
    """Warnings by default; ``-v`` info (every reconcile), ``-vv`` debug."""
    return {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)


def configure_logging(verbose: int = 0, *, json: bool | None = None) -> logging.Handler:
    """Route every logger to stderr at the level for ``verbose``; returns the handler.

    ``json`` None means: ``EVENTPLANE_LOG_FORMAT`` if set, else JSON when stderr is not a
    terminal. Calling it again replaces the handler it installed before (nothing else).
    """
    if json is None:
        wanted = os.environ.get("EVENTPLANE_LOG_FORMAT", "").strip().lower()
        if wanted in ("json", "text"):
            json = wanted == "json"
        else:
            isatty = getattr(sys.stderr, "isatty", None)
            json = not (isatty is not None and isatty())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_eventplane", False)]:
        root.removeHandler(old)
    handler = _StderrHandler()
    handler._eventplane = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level_for(verbose))
    return handler
