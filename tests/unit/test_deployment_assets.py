"""The deployment assets agree with the code: every manifest and compose file parses, every
``evtctl`` command they run exists with those flags, probes hit paths the health server
serves on the port it is told to use, and image, config and secret wiring line up.

There is no Docker engine or cluster here, so this is the check that ``docker compose up``
and ``kubectl apply -k resources/k8s`` would start what the code actually accepts.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from eventplane.config import load_settings
from eventplane.observability import HEALTH_PATHS
from evtctl.main import cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "resources" / "Dockerfile"
K8S = ROOT / "resources" / "k8s"
NATS_CONF = ROOT / "resources" / "nats" / "nats-server.conf"


def parse_evtctl(args: list[str]) -> list[click.Context]:
    """Parse ``evtctl ARGS`` through click's command tree without running anything; raises
    click.UsageError for an unknown command or option, or a bad value."""
    contexts = [cli.make_context("evtctl", list(args))]
    command: click.Command = cli
    while isinstance(command, click.Group):
        ctx = contexts[-1]
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            raise click.UsageError(f"evtctl {' '.join(args)}: names no command")
        name, found, rest = command.resolve_command(ctx, rest)
        assert found is not None
        assert name is not None
        command = found
        contexts.append(command.make_context(name, rest, parent=ctx))
    return contexts


def leaf(args: list[str]) -> click.Context:
    return parse_evtctl(args)[-1]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def eventplane_services() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose()["services"].items()
        if svc.get("build", {}).get("dockerfile") == "resources/Dockerfile"
    }


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    return docs


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            out.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
    return out


def eventplane_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [
        (name, pod, container)
        for name, pod in pod_specs()
        for container in pod["containers"]
        if container["image"].split(":")[0] == "eventplane"
    ]


def default_of(value: str) -> str:
    """``${VAR:-default}`` as compose resolves it with VAR unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


# -- the parser used by these tests ----------------------------------------------------------


def test_parsing_rejects_an_unknown_flag_and_an_unknown_command() -> None:
    with pytest.raises(click.NoSuchOption):
        parse_evtctl(["run", "--health-prot", "8080"])
    with pytest.raises(click.UsageError):
        parse_evtctl(["db", "migrat"])


# -- docker-compose.yml -----------------------------------------------------------------------


def test_every_compose_evtctl_command_exists_with_its_flags() -> None:
    services = eventplane_services()
    assert {"migrate", "controllers", "relay", "projections"} <= set(services)
    for svc in services.values():
        leaf(svc["command"])  # raises on anything evtctl does not accept


def test_compose_workers_split_the_parts_and_serve_health() -> None:
    services = eventplane_services()
    parts = {}
    for name in ("controllers", "relay", "projections"):
        params = leaf(services[name]["command"]).params
        parts[name] = {p for p in ("controllers", "relay", "projections") if params[p]}
        assert params["health_port"] is not None, name
    assert parts == {
        "controllers": {"controllers"},
        "relay": {"relay"},
        "projections": {"projections"},
    }
    assert leaf(services["migrate"]["command"]).info_name == "migrate"


def test_compose_health_checks_probe_the_served_path_and_port() -> None:
    for name, svc in eventplane_services().items():
        if name == "migrate":
            assert svc["healthcheck"] == {"disable": True}
            continue
        port = leaf(svc["command"]).params["health_port"]
        probe = " ".join(svc["healthcheck"]["test"])
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", probe)
        assert url is not None, probe
        assert int(url.group(1)) == port
        assert url.group(2) in HEALTH_PATHS
        # In-container probes need the server reachable on 127.0.0.1 at least.
        assert svc["environment"]["EVENTPLANE_HEALTH_HOST"] in ("0.0.0.0", "127.0.0.1")


def test_compose_workers_start_after_a_successful_migration_and_a_healthy_nats() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("controllers", "relay", "projections"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["nats"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["nats"]


def test_compose_environment_loads_as_postgres_and_nats_settings(tmp_path: Path) -> None:
    env = {k: default_of(str(v)) for k, v in eventplane_services()["relay"]["environment"].items()}
    settings = load_settings(cwd=tmp_path, env=env)
    assert settings.store_backend == "postgresql"
    assert settings.bus_backend == "nats"
    assert settings.store_password is not None
    assert settings.bus_password is not None
    pg = compose()["services"]["postgres"]["environment"]
    assert default_of(pg["POSTGRES_PASSWORD"]) == env["EVENTPLANE_STORE_PASSWORD"]
    assert f"{pg['POSTGRES_USER']}@postgres:5432/{pg['POSTGRES_DB']}" in env["EVENTPLANE_STORE_URL"]


def test_compose_nats_gets_every_variable_its_config_needs() -> None:
    conf = NATS_CONF.read_text()
    needed = set(re.findall(r"\$(EVENTPLANE_[A-Z0-9_]+)", conf))
    nats = compose()["services"]["nats"]
    assert needed <= set(nats["environment"])
    assert any("resources/nats/nats-server.conf" in v for v in nats["volumes"])
    worker_password = default_of(nats["environment"]["EVENTPLANE_NATS_WORKER_PASSWORD"])
    env = eventplane_services()["relay"]["environment"]
    assert default_of(env["EVENTPLANE_BUS_PASSWORD"]) == worker_password
    assert "user: worker" in conf
    assert "nats://worker@" in env["EVENTPLANE_BUS_URL"]
    # nats-server reads an unquoted variable as a token: letters first, no specials.
    for name in needed - {"EVENTPLANE_NATS_STORE_DIR"}:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", default_of(nats["environment"][name]))


# -- resources/Dockerfile ---------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_with_evtctl_as_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert len(stages) >= 2
    assert all("slim" in s for s in stages)
    assert re.search(r'^ENTRYPOINT \["evtctl"\]$', text, re.MULTILINE)
    user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert user
    assert not user[-1].startswith(("0", "root"))
    for folder in ("eventplane", "apps", "evtctl", "sqls"):
        assert re.search(rf"^COPY {folder} ", text, re.MULTILINE), folder
        assert (ROOT / folder).is_dir()
    assert "poetry install --only main" in text
    assert "COPY --from=build" in text
    # The wheel the image installs carries the migrations (default_sqls_dir finds them).
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = pyproject["tool"]["poetry"]["include"]
    assert any(i["path"].startswith("sqls/") and "wheel" in i["format"] for i in includes)


def test_the_image_runs_as_the_user_kubernetes_expects() -> None:
    uid = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), re.MULTILINE)[-1].split(":")[0]
    for name, pod in pod_specs():
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert str(security["runAsUser"]) == uid, name


# -- resources/k8s ----------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    images = {i["name"] for i in kustomization["images"]}
    assert {c["image"].split(":")[0] for _, _, c in eventplane_containers()} <= images


def test_every_k8s_evtctl_command_exists_with_its_flags() -> None:
    commands = {name: leaf(c["args"]).info_name for name, _, c in eventplane_containers()}
    assert commands == {
        "eventplane-migrate": "migrate",
        "eventplane-controllers": "run",
        "eventplane-relay": "run",
        "eventplane-projections": "run",
    }


def test_k8s_probes_hit_the_health_server_on_its_port() -> None:
    for name, _, container in eventplane_containers():
        params = leaf(container["args"]).params
        if "health_port" not in params:
            assert "livenessProbe" not in container
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in HEALTH_PATHS
            assert ports.get(get["port"], get["port"]) == params["health_port"], (name, probe)
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["EVENTPLANE_HEALTH_HOST"] == "0.0.0.0"  # probes come from the kubelet


def test_k8s_workers_have_replicas_resources_and_a_locked_down_container() -> None:
    deployments = {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == "Deployment"}
    assert set(deployments) == {
        "eventplane-controllers",
        "eventplane-relay",
        "eventplane-projections",
    }
    for name, deployment in deployments.items():
        assert deployment["spec"]["replicas"] >= 2, name
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert {"cpu", "memory"} <= set(container["resources"]["limits"])
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_k8s_config_and_secrets_are_wired_to_files_that_exist_in_the_pod() -> None:
    docs = k8s_documents()
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    secret = next(d for d in docs if d["kind"] == "Secret")
    assert all(
        "PLACEHOLDER" in line or "REPLACE-ME" in line
        for line in (K8S / "secret.yaml").read_text().splitlines()
        if re.match(r"\s+[a-z-]+: \"", line)
    )
    for name, pod, container in eventplane_containers():
        env = {e["name"]: e.get("value") for e in container["env"]}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        config_volume = next(n for n, v in volumes.items() if "configMap" in v)
        assert volumes[config_volume]["configMap"]["name"] == configmap["metadata"]["name"]
        config_path = Path(env["EVENTPLANE_CONFIG"])
        assert str(config_path.parent) == mounts[config_volume], name
        toml = tomllib.loads(configmap["data"][config_path.name])
        secret_volume = next(n for n, v in volumes.items() if "secret" in v)
        assert volumes[secret_volume]["secret"]["secretName"] == secret["metadata"]["name"]
        for key in ("store_password_file", "bus_password_file"):
            path = Path(toml[key])
            assert str(path.parent) == mounts[secret_volume], (name, key)
            assert path.name in secret["stringData"], (name, key)


def test_k8s_config_loads_as_postgres_and_nats_settings(tmp_path: Path) -> None:
    configmap = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")
    secret = next(d for d in k8s_documents() if d["kind"] == "Secret")
    text = configmap["data"]["eventplane.toml"]
    for key, value in secret["stringData"].items():
        (tmp_path / key).write_text(value)
    text = text.replace("/etc/eventplane/secrets/", f"{tmp_path}/")
    (tmp_path / "eventplane.toml").write_text(text)
    settings = load_settings(cwd=tmp_path, env={}, config_path=tmp_path / "eventplane.toml")
    assert settings.store_backend == "postgresql"
    assert settings.bus_backend == "nats"
    assert settings.store_password is not None
    assert settings.bus_password is not None
    grace = settings.runtime.shutdown_grace
    for doc in k8s_documents():
        if doc["kind"] == "Deployment":
            # The runner gives in-flight work shutdown_grace + 5 s before cancelling.
            assert doc["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= grace + 5
