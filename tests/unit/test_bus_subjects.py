"""Bus subject filters and bus URLs: pure parsing, no server."""

from __future__ import annotations

import pytest

from eventplane.bus import open_bus, sqlite_path_from_url, subject_filter
from eventplane.bus._subjects import parse_filter
from eventplane.errors import ConfigError, ValidationError
from eventplane.event.model import Category


@pytest.mark.parametrize(
    ("filter_subject", "subject", "matches"),
    [
        ("eventplane.>", ("acme", "organization", "fact"), True),
        ("eventplane.acme.>", ("acme", "team", "intent"), True),
        ("eventplane.acme.>", ("globex", "team", "intent"), False),
        ("eventplane.*.organization.fact", ("globex", "organization", "fact"), True),
        ("eventplane.*.organization.fact", ("globex", "organization", "internal"), False),
        ("eventplane.acme.*.>", ("acme", "team", "fact"), True),
        ("eventplane.*.*.*", ("acme", "team", "fact"), True),
    ],
)
def test_filter_matches_with_nats_wildcard_semantics(
    filter_subject: str, subject: tuple[str, str, str], matches: bool
) -> None:
    assert parse_filter(filter_subject).matches(*subject) is matches


def test_subject_filter_helper_builds_filters_the_parser_accepts() -> None:
    built = subject_filter("acme", "Organization", Category.FACT)

    assert built == "eventplane.acme.organization.fact"
    assert parse_filter(built).matches("acme", "organization", "fact")


@pytest.mark.parametrize(
    "bad", ["", "eventplane", "events.>", "eventplane..x.y", "eventplane.a.b.c.d", "eventplane.>.x"]
)
def test_malformed_filter_is_rejected_with_the_field_and_a_fix(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_filter(bad)

    [error] = caught.value.errors
    assert error.path == "filter_subject"
    assert "subject_filter(" in error.fix


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///.eventplane/eventplane.db", ".eventplane/eventplane.db"),
        ("sqlite:////var/lib/eventplane.db", "/var/lib/eventplane.db"),
        ("sqlite+aiosqlite:///x.db?mode=rwc", "x.db"),
    ],
)
def test_sqlite_bus_url_names_the_database_file(url: str, path: str) -> None:
    assert sqlite_path_from_url(url) == path


async def test_sqlite_bus_url_without_a_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sqlite:///path"):
        await open_bus("sqlite:///")


async def test_memory_bus_url_takes_no_options() -> None:
    with pytest.raises(ConfigError, match="no options"):
        await open_bus("memory://", poll_interval=1)
