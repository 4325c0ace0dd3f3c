"""Hypothesis strategies for real Event instances, shared by property tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from eventplane.event.model import (
    Category,
    Condition,
    ConditionStatus,
    Event,
    EventMetadata,
    ResourceStatus,
)
from eventplane.utils import uuid7

dns_labels = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")
kinds = st.sampled_from(["Organization", "Project", "BillingAccount"])
reasons = st.from_regex(r"\A[A-Z][A-Za-z0-9]{0,15}\Z")
# Microsecond-precision aware UTC times: what every backend keeps exactly.
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    return Condition(
        type=draw(st.sampled_from(["Ready", "Synced", "Progressing"])),
        status=draw(st.sampled_from(list(ConditionStatus))),
        reason=draw(reasons),
        message=draw(st.text(max_size=30)),
        observed_generation=draw(st.integers(0, 50)),
        last_transition_time=draw(times),
    )


@st.composite
def statuses(draw: st.DrawFn) -> ResourceStatus:
    return ResourceStatus(
        phase=draw(st.none() | st.sampled_from(["Pending", "Ready", "Failed", "Deleting"])),
        observed_generation=draw(st.integers(0, 50)),
        message=draw(st.text(max_size=20)),
        conditions=tuple(draw(st.lists(conditions(), max_size=3))),
        attempts=draw(st.integers(0, 10)),
        last_error=draw(st.none() | st.text(max_size=20)),
    )


@st.composite
def events(draw: st.DrawFn, *, recorded: bool | None = None) -> Event:
    kind = draw(kinds)
    category = draw(st.sampled_from(list(Category)))
    is_recorded = draw(st.booleans()) if recorded is None else recorded
    occurred = draw(times)
    meta = EventMetadata(
        generation=draw(st.integers(0, 100)),
        correlation_id=uuid7(),
        causation_id=draw(st.none() | st.builds(uuid7)),
        actor=draw(st.text(min_size=1, max_size=20)),
        source=draw(st.sampled_from(["evtctl", "/eventplane/runtime", "urn:eventplane:test"])),
        labels=draw(st.dictionaries(dns_labels, st.text(max_size=10), max_size=3)),
        occurred_at=occurred,
        signature=draw(st.none() | st.text(min_size=1, max_size=40)),
        stream_version=draw(st.integers(1, 10_000)) if is_recorded else None,
        position=draw(st.integers(1, 10**12)) if is_recorded else None,
        recorded_at=occurred + timedelta(microseconds=draw(st.integers(0, 10**6)))
        if is_recorded
        else None,
    )
    return Event(
        id=uuid7(),
        tenant=draw(dns_labels),
        kind=kind,
        name=draw(dns_labels),
        type=f"{kind}.{draw(reasons)}",
        category=category,
        api_version=f"{kind.lower()}/v1",
        spec=draw(st.none() | json_objects),
        data=draw(json_objects),
        metadata=meta,
        status=draw(st.none() | statuses()),
        finalizers=draw(st.none() | st.lists(dns_labels, max_size=3).map(tuple)),
        deletion_requested_at=draw(st.none() | times),
    )
