"""Settings: embedded defaults, .eventplane.toml discovery, environment overrides, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventplane.config import PolicyRule, Settings, find_config_file, load_settings
from eventplane.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_configuration_means_everything_embedded_under_dot_eventplane(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, env={})
    assert settings.home == tmp_path / ".eventplane"
    assert settings.store_url == f"sqlite:///{tmp_path}/.eventplane/eventplane.db"
    assert settings.bus_url == settings.store_url
    assert settings.store_backend == "sqlite"
    assert settings.bus_backend == "sqlite"
    assert settings.tenant == "default"
    assert settings.config_file is None
    assert settings.security.policy is None


def test_config_file_is_found_from_a_subdirectory_upward(tmp_path: Path) -> None:
    config = write(tmp_path / ".eventplane.toml", 'tenant = "acme"\n')
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_config_file(nested) == config
    settings = load_settings(cwd=nested, env={})
    assert settings.tenant == "acme"
    assert settings.config_file == config
    # Relative paths resolve next to the config file, not the working directory.
    assert settings.home == tmp_path / ".eventplane"


def test_eventplane_config_variable_and_explicit_path_pick_the_file(tmp_path: Path) -> None:
    elsewhere = write(tmp_path / "conf" / "ep.toml", 'tenant = "from-env"\n')
    explicit = write(tmp_path / "conf" / "explicit.toml", 'tenant = "explicit"\n')
    assert (
        load_settings(cwd=tmp_path, env={"EVENTPLANE_CONFIG": str(elsewhere)}).tenant == "from-env"
    )
    assert (
        load_settings(
            cwd=tmp_path, env={"EVENTPLANE_CONFIG": str(elsewhere)}, config_path=explicit
        ).tenant
        == "explicit"
    )


def test_a_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(cwd=tmp_path, env={"EVENTPLANE_CONFIG": "nope.toml"})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    write(
        tmp_path / ".eventplane.toml",
        'tenant = "acme"\nstore_url = "sqlite:///x.db"\n[runtime]\nmax_attempts = 3\n',
    )
    settings = load_settings(
        cwd=tmp_path,
        env={
            "EVENTPLANE_TENANT": "globex",
            "EVENTPLANE_STORE_URL": "postgresql://ep@db:5432/ep",
            "EVENTPLANE_BUS_URL": "nats://nats:4222",
            "EVENTPLANE_MAX_ATTEMPTS": "5",
            "EVENTPLANE_ACTOR": "ci@acme.example",
        },
    )
    assert settings.tenant == "globex"
    assert settings.store_backend == "postgresql"
    assert settings.bus_backend == "nats"
    assert settings.runtime.max_attempts == 5
    assert settings.security.actor == "ci@acme.example"


def test_store_url_alone_moves_the_default_bus_with_it(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, env={"EVENTPLANE_STORE_URL": "sqlite:////data/ep.db"})
    assert settings.bus_url == "sqlite:////data/ep.db"


def test_runtime_and_security_sections_are_loaded_with_the_policy_schema(tmp_path: Path) -> None:
    write(
        tmp_path / ".eventplane.toml",
        """
[runtime]
max_concurrency = 4
backoff_base = 0.5
backoff_cap = 30

[security]
actor = "alice@acme.example"
key_file = "keys/alice.key"
trusted_keys = ["k1"]

[[security.policy]]
actors = ["alice@acme.example"]
verbs = ["apply", "delete"]
kinds = ["*"]
tenants = ["acme"]
""",
    )
    settings = load_settings(cwd=tmp_path, env={})
    assert settings.runtime.max_concurrency == 4
    assert settings.runtime.backoff_cap == 30
    assert settings.security.key_file == tmp_path / "keys" / "alice.key"
    assert settings.security.trusted_keys == ["k1"]
    assert settings.security.policy == [
        PolicyRule(
            actors=["alice@acme.example"], verbs=["apply", "delete"], kinds=["*"], tenants=["acme"]
        )
    ]


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        pytest.param('tenant = "Not A Label"\n', "tenant", id="bad-tenant"),
        pytest.param('colour = "red"\n', "colour", id="unknown-key"),
        pytest.param('store_url = "mysql://db/x"\n', "store_url", id="bad-scheme"),
        pytest.param("[runtime]\nmax_attempts = 0\n", "runtime.max_attempts", id="bad-runtime"),
        pytest.param(
            "[runtime]\nbackoff_base = 10\nbackoff_cap = 1\n", "backoff_cap", id="cap-below-base"
        ),
        pytest.param(
            '[[security.policy]]\nactors = ["a"]\nverbs = ["read"]\n'
            'kinds = ["*"]\ntenants = ["*"]\n',
            "security.policy.0.verbs",
            id="bad-verb",
        ),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_key(
    tmp_path: Path, toml: str, names: str
) -> None:
    write(tmp_path / ".eventplane.toml", toml)
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_settings(cwd=tmp_path, env={})


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / ".eventplane.toml", "tenant = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cwd=tmp_path, env={})


def test_passwords_in_the_config_file_are_refused(tmp_path: Path) -> None:
    write(tmp_path / ".eventplane.toml", 'store_url = "postgresql://ep:hunter2@db/ep"\n')
    with pytest.raises(ConfigError, match="contains a password") as info:
        load_settings(cwd=tmp_path, env={})
    assert "hunter2" not in str(info.value)
    write(tmp_path / ".eventplane.toml", 'store_password = "hunter2"\n')
    with pytest.raises(ConfigError, match="not allowed in the config file"):
        load_settings(cwd=tmp_path, env={})


def test_passwords_come_from_the_environment_or_a_file_and_stay_secret(tmp_path: Path) -> None:
    write(tmp_path / "secrets" / "pg", "s3cret/pw\n")
    write(
        tmp_path / ".eventplane.toml",
        'store_url = "postgresql://ep@db:5432/ep"\nstore_password_file = "secrets/pg"\n',
    )
    settings = load_settings(cwd=tmp_path, env={})
    assert settings.store_dsn() == "postgresql://ep:s3cret%2Fpw@db:5432/ep"
    assert "s3cret" not in repr(settings)
    from_env = load_settings(cwd=tmp_path, env={"EVENTPLANE_STORE_PASSWORD": "envpw"})
    assert from_env.store_dsn() == "postgresql://ep:envpw@db:5432/ep"


def test_an_unreadable_password_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bus_password_file"):
        load_settings(cwd=tmp_path, env={"EVENTPLANE_BUS_PASSWORD_FILE": str(tmp_path / "missing")})


def test_overrides_are_revalidated(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, env={})
    assert settings.with_overrides(tenant="acme", store_url=None).tenant == "acme"
    with pytest.raises(ConfigError, match="tenant"):
        settings.with_overrides(tenant="NOT OK")
    assert isinstance(settings.with_overrides(), Settings)
