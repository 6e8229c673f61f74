"""The container image, the compose file and the Kubernetes manifests agree with the code.

They parse; every `WIDGETS_*` name they mention is a setting the service reads
(`infrastructure.settings`); every value they set has that setting's shape; no
secret value is written into them; and every command they run is one the
`widgets` command line has, with options it accepts.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from api.cli import main as widgets_cli
from infrastructure.settings import Settings, documented_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_MANAGED = DEPLOY / "compose.managed.yaml"
K8S_MANAGED = K8S / "managed"
DOCKERFILE = DEPLOY / "Dockerfile"
README = DEPLOY / "README.md"

SETTINGS = {name for name, _, _ in documented_settings()}
SECRET_SETTINGS = {"WIDGETS_DATABASE_URL", "WIDGETS_REDIS_URL", "WIDGETS_AUTH_SECRET", "WIDGETS_DATA_KEY",
                   "WIDGETS_DATA_KEY_PREVIOUS", "WIDGETS_LIVEKIT_API_KEY", "WIDGETS_LIVEKIT_API_SECRET"}
# The deployment keys: every process that opens the event store needs them (the API, and the projection runner,
# whose retention sweep reads what it erases and where `widgets rotate-data-key` is run).
DATA_KEY_SETTINGS = ("WIDGETS_DATA_KEY", "WIDGETS_DATA_KEY_PREVIOUS")
SECRET_NAME = "widgets-secrets"
OUR_SERVICES = ("api", "projector")
WIDGETS_NAME = re.compile(r"WIDGETS_[A-Z0-9_]*[A-Z0-9]")
SERVER_GRACEFUL_TIMEOUT = 20  # seconds `widgets serve` gives in-flight requests after SIGTERM


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                yield path, document


def k8s_resources(kind: str) -> list[dict[str, Any]]:
    return [doc for path, doc in k8s_documents() if path.name != "kustomization.yaml" and doc["kind"] == kind]


def k8s_one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in k8s_resources(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def interpolated(value: str) -> str:
    """What compose makes of `${VAR:-default}` when VAR is unset (a fresh machine)."""
    def replace(match: re.Match[str]) -> str:
        return match.group(2) or ""

    return re.sub(r"\$\{(\w+)(?::?[-?]([^}]*))?\}", replace, value).replace("$$", "$")


# ---- the shape of each setting's value -------------------------------------------------

def _one_of(*allowed: str) -> Callable[[str], bool]:
    return lambda value: value in allowed


def _url(*schemes: str) -> Callable[[str], bool]:
    return lambda value: re.fullmatch(rf"({'|'.join(map(re.escape, schemes))})://[^\s/]+(/\S*)?", value) is not None


def _positive(value: str) -> bool:
    return float(value) > 0


SHAPES: dict[str, Callable[[str], bool]] = {
    "WIDGETS_DATABASE_URL": _url("postgresql", "postgres"),
    "WIDGETS_DATABASE_SCHEMA": lambda v: re.fullmatch(r"[a-z_][a-z0-9_]*", v) is not None,
    "WIDGETS_REDIS_URL": _url("redis", "rediss", "redis+cluster", "rediss+cluster"),
    "WIDGETS_DATABASE_POOLER": _one_of("none", "transaction"),
    "WIDGETS_DATABASE_LISTEN_URL": _url("postgresql", "postgres"),
    "WIDGETS_REDIS_PREFIX": lambda v: v != "" and " " not in v,
    "WIDGETS_LIVEKIT_URL": _url("ws", "wss"),
    "WIDGETS_PUBLIC_BASE_URL": _url("http", "https"),
    "WIDGETS_PROJECTIONS": _one_of("auto", "inprocess", "external"),
    "WIDGETS_LOG_LEVEL": _one_of("debug", "info", "warning", "error"),
    "WIDGETS_LOG_FORMAT": _one_of("json", "console", "auto"),
    "WIDGETS_RATE_CONFIG_READS": lambda v: re.fullmatch(r"\d+/(second|minute|hour|day)", v) is not None,
    "WIDGETS_RATE_CONVERSATION_STARTS": lambda v: re.fullmatch(r"\d+/(second|minute|hour|day)", v) is not None,
    "WIDGETS_PORT": lambda v: 0 < int(v) < 65536,
    "WIDGETS_METRICS_PORT": lambda v: 0 <= int(v) < 65536,
    "WIDGETS_HOST": lambda v: re.fullmatch(r"[0-9a-zA-Z.:\-\[\]]+", v) is not None,
    "WIDGETS_WORKERS": _positive,
    "WIDGETS_LIVEKIT_TOKEN_TTL": _positive,
    "WIDGETS_PUBLIC_CACHE_SIZE": _positive,
    "WIDGETS_PUBLIC_CACHE_TTL": _positive,
    "WIDGETS_REDIS_MAX_CONNECTIONS": _positive,
    "WIDGETS_PG_POOL_SIZE": _positive,
    "WIDGETS_STARTUP_TIMEOUT": _positive,
    "WIDGETS_DATA_DIR": lambda v: v.startswith("/"),
}


def assert_settings_shaped(env: dict[str, Any], where: str) -> None:
    unknown = set(env) - SETTINGS
    assert not unknown, f"{where} sets {sorted(unknown)}, which the service does not read"
    for name, value in env.items():
        if value is None:  # compose: passed through from the shell when set there
            continue
        assert isinstance(value, str), f"{where}: {name} must be a quoted string, not {type(value).__name__}"
        if name in SHAPES:
            try:
                shaped = SHAPES[name](value)
            except ValueError:
                shaped = False
            assert shaped, f"{where}: {name}={value!r} does not have the shape of that setting"
    # Every typed setting converts (the service refuses to start otherwise).
    Settings.from_env({k: v for k, v in env.items() if v is not None})


def test_the_settings_shapes_cover_no_setting_that_does_not_exist() -> None:
    assert set(SHAPES) <= SETTINGS


# ---- commands: everything the files run is a `widgets` command with options it has --------

def assert_widgets_command(argv: list[str], where: str) -> None:
    assert argv, f"{where}: empty command"
    command = widgets_cli.commands.get(argv[0])
    assert command is not None, f"{where}: `widgets {argv[0]}` does not exist"
    options = {opt for param in command.params if isinstance(param, click.Option) for opt in param.opts}
    for arg in argv[1:]:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in options, f"{where}: `widgets {argv[0]}` has no option {arg}"


# ---- Dockerfile ------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_the_image_runs_widgets_serve_on_all_interfaces() -> None:
    stage = final_stage()
    entrypoint = [json.loads(rest) for keyword, rest in stage if keyword == "ENTRYPOINT"][-1]
    cmd = [json.loads(rest) for keyword, rest in stage if keyword == "CMD"][-1]
    assert entrypoint == ["widgets"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["widgets"] == "api.cli:main"
    assert cmd[:1] == ["serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert_widgets_command(cmd, "Dockerfile CMD")


def test_the_image_is_multi_stage_locked_slim_and_not_root() -> None:
    instructions = dockerfile_instructions()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for keyword, rest in instructions if keyword == "ARG" and "=" in rest}
    froms = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(froms) >= 3, "a Node stage for the bundle, a build stage and a runtime stage"
    runtime_base = froms[-1].split()[0]
    runtime_image = args.get(runtime_base.strip("${}"), runtime_base)
    assert runtime_image.startswith("python:3.11-slim")
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "uv sync --frozen --no-dev" in runs
    assert "npm --prefix api/embed ci" in runs and "npm --prefix api/embed run build" in runs
    stage = final_stage()
    assert any(keyword == "COPY" and "api/static/dist" in rest and "--from=" in rest for keyword, rest in stage)
    user = [rest for keyword, rest in stage if keyword == "USER"][-1]
    assert user.split(":")[0] not in {"0", "root"}


def test_the_image_sets_only_settings_the_service_reads() -> None:
    env: dict[str, Any] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    assert_settings_shaped({k: v for k, v in env.items() if k.startswith("WIDGETS_")}, "Dockerfile ENV")


# ---- compose ---------------------------------------------------------------------------------

def test_compose_has_the_production_shaped_stack() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "livekit", *OUR_SERVICES} <= set(services)
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["projector"]["deploy"]["replicas"] == 1
    livekit = services["livekit"]
    assert livekit["image"].startswith("livekit/livekit-server")
    assert "--dev" in livekit["command"] and livekit["command"][livekit["command"].index("--bind") + 1] == "0.0.0.0"
    for name in ("postgres", "redis", "livekit", "api"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    grace = re.fullmatch(r"(\d+)s", services["api"]["stop_grace_period"])
    assert grace and int(grace.group(1)) > SERVER_GRACEFUL_TIMEOUT, "compose must wait for the drain before SIGKILL"
    for name in OUR_SERVICES:
        conditions = services[name]["depends_on"]
        assert conditions["postgres"]["condition"] == conditions["redis"]["condition"] == "service_healthy"


def test_compose_runs_only_widgets_commands() -> None:
    services = compose()["services"]
    assert services["api"]["command"][0] == "serve"
    assert services["projector"]["command"] == ["project"]
    for name in OUR_SERVICES:
        assert_widgets_command(services[name]["command"], f"compose service {name}")


@pytest.mark.parametrize("service", OUR_SERVICES)
def test_compose_sets_only_settings_the_service_reads_with_their_shape(service: str) -> None:
    environment = compose()["services"][service]["environment"]
    assert isinstance(environment, dict), "environment as a mapping, so that names can be checked"
    env = {k: (interpolated(v) if isinstance(v, str) else v) for k, v in environment.items()}
    assert_settings_shaped(env, f"compose service {service}")
    assert env["WIDGETS_PROJECTIONS"] == "external", "projections run in the projector service"
    settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
    assert not settings.embedded and settings.redis_url and not settings.projections_in_process


# ---- Kubernetes ------------------------------------------------------------------------------

def test_every_manifest_parses_and_kustomize_lists_every_one() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for path, document in k8s_documents():
        if path.name != "kustomization.yaml":
            assert document["apiVersion"] and document["kind"] and document["metadata"]["name"], path.name


def containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in k8s_resources("Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment["metadata"]["name"], container


def test_the_configmap_holds_only_non_secret_settings_with_their_shape() -> None:
    (configmap,) = k8s_resources("ConfigMap")
    data = configmap["data"]
    assert_settings_shaped(data, "ConfigMap")
    assert not set(data) & SECRET_SETTINGS, "secrets belong in the Secret, by reference"
    assert data["WIDGETS_PROJECTIONS"] == "external"


def test_no_secret_value_is_in_the_repository() -> None:
    assert not k8s_resources("Secret"), "the Secret is created outside the repository; only references live here"
    for deployment, container in containers():
        for var in container.get("env", []):
            assert var["name"] in SETTINGS, f"{deployment}: {var['name']} is not a setting the service reads"
            if var["name"] in SECRET_SETTINGS:
                assert "value" not in var, f"{deployment}: {var['name']} must come from a Secret"
                assert var["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME
            elif "value" in var:
                assert_settings_shaped({var["name"]: var["value"]}, f"{deployment} env")


def test_every_pod_gets_the_configmap_and_the_stores_from_the_secret() -> None:
    (configmap,) = k8s_resources("ConfigMap")
    for deployment, container in containers():
        refs = [source["configMapRef"]["name"] for source in container.get("envFrom", [])]
        assert configmap["metadata"]["name"] in refs, deployment
        from_secret = {var["name"] for var in container.get("env", []) if "secretKeyRef" in var.get("valueFrom", {})}
        assert {"WIDGETS_DATABASE_URL", "WIDGETS_REDIS_URL"} <= from_secret, deployment


def test_every_pod_gets_the_deployment_data_key_and_the_previous_one_when_the_secret_has_it() -> None:
    deployments = {name for name, _ in containers()}
    assert deployments == {"widgets-api", "widgets-projector"}
    for deployment, container in containers():
        env = {var["name"]: var for var in container.get("env", [])}
        current = env["WIDGETS_DATA_KEY"]["valueFrom"]["secretKeyRef"]
        assert (current["name"], current["key"]) == (SECRET_NAME, "data-key"), deployment
        assert not current.get("optional", False), f"{deployment}: a pod without the data key must not start"
        previous = env["WIDGETS_DATA_KEY_PREVIOUS"]["valueFrom"]["secretKeyRef"]
        assert (previous["name"], previous["key"], previous["optional"]) == (SECRET_NAME, "data-key-previous", True), \
            f"{deployment}: the previous key is in the Secret only while a rotation is under way"


def test_the_readmes_secret_command_creates_every_required_key_the_pods_reference() -> None:
    text = README.read_text()
    command = re.search(r"kubectl create secret generic widgets-secrets((?:.*\\\n)+.*)", text)
    assert command, "deploy/README.md shows how to create the Secret"
    created = set(re.findall(r"--from-literal=([a-z0-9-]+)=", command.group(1)))
    required = {var["valueFrom"]["secretKeyRef"]["key"] for _, container in containers() for var in container.get("env", [])
                if "secretKeyRef" in var.get("valueFrom", {}) and not var["valueFrom"]["secretKeyRef"].get("optional")}
    assert required <= created, f"the README's command leaves out {sorted(required - created)}"
    assert "data-key-previous" not in created, "the previous key is added only for a rotation"
    assert_widgets_command(["rotate-data-key"], "deploy/README.md")
    assert "widgets rotate-data-key" in text


def test_compose_passes_the_data_keys_through_from_the_shell_and_writes_none_down() -> None:
    services = compose()["services"]
    for name in OUR_SERVICES:
        environment = services[name]["environment"]
        for setting in DATA_KEY_SETTINGS:
            assert setting in environment and environment[setting] is None, f"compose {name}: {setting} passed through, no value"


def test_the_api_deployment_probes_drains_and_runs_widgets_serve() -> None:
    deployment = k8s_one("Deployment", "widgets-api")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert_widgets_command(container["args"], "widgets-api args")
    assert container["args"][0] == "serve" and container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    port = container["ports"][0]
    assert str(port["containerPort"]) == container["args"][container["args"].index("--port") + 1]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and int(sleep[1]) > 0
    # The grace period covers the preStop sleep and then the server's drain.
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + SERVER_GRACEFUL_TIMEOUT
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "cpu" in container["resources"]["requests"], "the autoscaler needs a CPU request"


def test_the_autoscaler_the_budget_and_the_service_point_at_the_api() -> None:
    deployment = k8s_one("Deployment", "widgets-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = k8s_one("HorizontalPodAutoscaler", "widgets-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "widgets-api"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = k8s_one("PodDisruptionBudget", "widgets-api")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service,) = k8s_resources("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_the_projection_runner_is_one_replica_replaced_by_recreate() -> None:
    deployment = k8s_one("Deployment", "widgets-projector")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["project"]
    assert_widgets_command(container["args"], "widgets-projector args")
    assert not k8s_resources("HorizontalPodAutoscaler") or all(
        hpa["spec"]["scaleTargetRef"]["name"] != "widgets-projector" for hpa in k8s_resources("HorizontalPodAutoscaler"))


# ---- every WIDGETS_* name anywhere under deploy/ is a setting ----------------------------------

def deploy_files() -> list[Path]:
    """The deployment's own files, as git has them (not an environment or a cache made beside them)."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "deploy"],
                            cwd=DEPLOY.parent, capture_output=True, check=True).stdout.decode().split("\0")
    return sorted(DEPLOY.parent / name for name in listed if name and (DEPLOY.parent / name).is_file())


@pytest.mark.parametrize("path", deploy_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_widgets_name_mentioned_is_a_setting_the_service_reads(path: Path) -> None:
    mentioned = set(WIDGETS_NAME.findall(path.read_text()))
    assert mentioned <= SETTINGS, f"{path.name} mentions {sorted(mentioned - SETTINGS)}"


def test_the_deploy_readme_lists_every_setting() -> None:
    listed = set(re.findall(r"^\| `(WIDGETS_[A-Z0-9_]+)` \|", README.read_text(), re.MULTILINE))
    assert listed == SETTINGS, f"missing {sorted(SETTINGS - listed)}, stale {sorted(listed - SETTINGS)}"



# ---- the managed variant: a Redis Cluster and a transaction-mode PgBouncer ----------------------

def test_the_managed_compose_file_adds_a_cluster_and_a_pooler_and_points_our_services_at_them() -> None:
    services = yaml.safe_load(COMPOSE_MANAGED.read_text())["services"]
    nodes = [name for name in services if name.startswith("redis-node-")]
    assert len(nodes) == 6, "three primaries and three replicas"
    create = " ".join(services["redis-cluster-init"]["command"])
    assert "--cluster create" in create and "--cluster-replicas 1" in create and all(f"{n}:6379" in create for n in nodes)
    assert services["pgbouncer"]["environment"]["POOL_MODE"] == "transaction"
    base = compose()["services"]
    for name in OUR_SERVICES:
        env = {**base[name]["environment"], **services[name]["environment"]}
        env = {k: (interpolated(v) if isinstance(v, str) else v) for k, v in env.items()}
        assert_settings_shaped(env, f"managed compose service {name}")
        settings = Settings.from_env({k: v for k, v in env.items() if v is not None})
        assert settings.behind_pooler and "@pgbouncer:" in settings.database_url and "@postgres:" in settings.listen_url
        assert settings.redis_url.startswith("redis+cluster://")
        assert all(host.split(":")[0] in nodes for host in settings.redis_url.removeprefix("redis+cluster://").split(","))
        assert {"pgbouncer", "redis-cluster-init"} <= set(services[name]["depends_on"])


def test_the_managed_kustomization_layers_the_base_with_a_pooler_and_a_cluster() -> None:
    kustomization = yaml.safe_load((K8S_MANAGED / "kustomization.yaml").read_text())
    assert "../" in kustomization["resources"]
    listed = set(kustomization["resources"]) - {"../"} | {p["path"] for p in kustomization["patches"]}
    assert listed == {p.name for p in K8S_MANAGED.glob("*.yaml")} - {"kustomization.yaml"}
    documents = [d for p in sorted(K8S_MANAGED.glob("*.yaml")) if p.name != "kustomization.yaml"
                 for d in yaml.safe_load_all(p.read_text()) if d is not None]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {("Deployment", "widgets-pgbouncer"), ("Service", "widgets-pgbouncer"), ("StatefulSet", "widgets-redis-cluster"),
            ("Job", "widgets-redis-cluster-create")} <= kinds
    (configmap,) = [d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "widgets-config"]
    assert_settings_shaped(configmap["data"], "managed ConfigMap patch")
    assert configmap["data"]["WIDGETS_DATABASE_POOLER"] == "transaction"
    ini = next(d for d in documents if d["metadata"]["name"] == "widgets-pgbouncer-config")["data"]["pgbouncer.ini"]
    assert "pool_mode = transaction" in ini
    patched = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] != "widgets-pgbouncer"}
    assert set(patched) == {"widgets-api", "widgets-projector"}
    for name, deployment in patched.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (var,) = container["env"]
        assert var["name"] == "WIDGETS_DATABASE_LISTEN_URL" and var["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME, name
    statefulset = next(d for d in documents if d["kind"] == "StatefulSet")
    assert statefulset["spec"]["replicas"] == 6
    assert "--cluster-enabled yes" in " ".join(statefulset["spec"]["template"]["spec"]["containers"][0]["args"])
