"""Deployment files: docker-compose.yml, infra/Dockerfile, the Ray cluster launcher config and
the KubeRay manifests. Nothing here starts a container: compose files are checked through
`docker-compose config` (which needs no Docker engine), the rest by parsing."""

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
RAY_SERVICES = ("ray-head", "ray-worker")


def read_env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


ENV = read_env_file(ENV_EXAMPLE)
SECRETS = {k: v for k, v in ENV.items() if v.startswith("change-me")}


def compose(env_file: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package docker-compose) is needed for these tests"
    # A bare environment: compose lets shell variables override the env file.
    return subprocess.run(
        [exe, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict:
    result = compose(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def published(service: dict) -> list[tuple[str, int]]:
    """(host ip, host port) of each published port, in either syntax compose prints."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published") is not None:
                out.append((port.get("host_ip", "0.0.0.0"), int(port["published"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            out.append((parts[0], int(parts[1])))
        elif len(parts) == 2:
            out.append(("0.0.0.0", int(parts[0])))
    return out


def as_dict(environment) -> dict:
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return dict(environment or {})


def command_text(service: dict) -> str:
    cmd = service.get("command", "")
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


# ---- docker-compose.yml ---------------------------------------------------------------------

def test_compose_stack_has_every_service(services):
    assert {"postgres", "minio", "minio-init", "mlflow", *RAY_SERVICES} <= set(services)


def test_only_mlflow_is_published_on_all_interfaces(services):
    public = {name for name, s in services.items()
              for ip, _ in published(s) if ip not in ("127.0.0.1", "::1")}
    assert public == {"mlflow"}
    assert ("0.0.0.0", 5000) in published(services["mlflow"])
    for store in ("postgres", "minio"):
        assert not services[store].get("ports"), f"{store} must not publish a port"


def test_ray_dashboard_is_loopback_only(services):
    assert published(services["ray-head"]) == [("127.0.0.1", 8265)]
    assert not services["ray-worker"].get("ports")


def test_stores_sit_on_an_internal_network():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    assert raw["networks"]["backend"]["internal"] is True
    for store in ("postgres", "minio"):
        assert raw["services"][store]["networks"] == ["backend"]


def test_compose_file_holds_no_literal_secret():
    text = COMPOSE_FILE.read_text()
    assert "password1234" not in text  # MLflow's old default admin password
    for name, value in SECRETS.items():
        assert value not in text, f"{name}'s value is written into docker-compose.yml"
        # Every use of a secret must be a required interpolation, never a silent default.
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} from infra/.env.example is unused"
        assert all(u.startswith(":?") for u in uses), f"{name} must be ${{{name}:?...}}"


def test_env_example_documents_every_variable():
    code = "\n".join(line for line in COMPOSE_FILE.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{(\w+)", code))
    assert used == set(ENV), "infra/.env.example and docker-compose.yml disagree"
    assert len(SECRETS) >= 8
    assert not any("password1234" in v for v in ENV.values())


@pytest.mark.parametrize("missing", ["RAY_AUTH_TOKEN", "POSTGRES_PASSWORD"])
def test_compose_refuses_to_start_without_a_secret(tmp_path, missing):
    env_file = tmp_path / "partial.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in ENV.items() if k != missing))
    result = compose(env_file)
    assert result.returncode != 0
    assert f"set {missing} in infra/.env" in result.stderr


def test_mlflow_server_command(services):
    mlflow = services["mlflow"]
    cmd = command_text(mlflow)
    assert "--app-name=basic-auth" in cmd
    assert "--serve-artifacts" in cmd
    assert re.search(r"--artifacts-destination=s3://[\w.-]+/", cmd)
    hosts = re.search(r"--allowed-hosts=(\S+)", cmd).group(1).split(",")
    assert "mlflow:5000" in hosts and "*" not in hosts
    backend = re.search(r"--backend-store-uri=(\S+)", cmd).group(1)
    assert backend.startswith("postgresql")
    assert urlsplit(backend).password is None  # the password comes from PGPASSWORD
    env = as_dict(mlflow["environment"])
    assert env["PGPASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # The tracking server gets the bucket-scoped MinIO user, not the root account.
    assert env["AWS_ACCESS_KEY_ID"] == SECRETS["MLFLOW_S3_ACCESS_KEY"]
    assert not any(k.startswith("MINIO_ROOT") for k in env)


def test_mlflow_auth_config_has_no_secret():
    text = (INFRA / "mlflow" / "basic_auth.ini").read_text()
    assert "password1234" not in text
    config = configparser.ConfigParser()
    config.read_string(text)
    auth = config["mlflow"]
    assert not auth.get("admin_password")
    db = urlsplit(auth["database_uri"])
    assert db.scheme.startswith("postgresql") and db.password is None


def test_ray_services_use_token_auth_and_reach_mlflow(services):
    for name in RAY_SERVICES:
        env = as_dict(services[name]["environment"])
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN"] == SECRETS["RAY_AUTH_TOKEN"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["MLFLOW_TRACKING_USERNAME"] == ENV["MLFLOW_TRACKING_USERNAME"]
        assert env["MLFLOW_TRACKING_PASSWORD"] == SECRETS["MLFLOW_TRACKING_PASSWORD"]
        # Least privilege: no admin, database or object-store secrets on the Ray nodes.
        leaked = set(env.values()) & (set(SECRETS.values()) - {
            SECRETS["RAY_AUTH_TOKEN"], SECRETS["MLFLOW_TRACKING_PASSWORD"]})
        assert not leaked, f"{name} gets secrets it does not need"
    assert "--address=ray-head:6379" in command_text(services["ray-worker"])


def test_gpu_worker_reserves_a_gpu(services):
    devices = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_shared_sweep_storage_and_startup_order(services):
    for name in RAY_SERVICES:
        assert any(str(v).startswith("saliq-runs:/data/saliq-runs")
                   for v in services[name]["volumes"])
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert (services["mlflow"]["depends_on"]["minio-init"]["condition"]
            == "service_completed_successfully")
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    for name in ("postgres", "minio", "mlflow", "ray-head"):
        assert services[name]["healthcheck"]["test"]


# ---- infra/Dockerfile -------------------------------------------------------------------------

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_pins_images_and_packages():
    instructions = dockerfile_instructions(INFRA / "Dockerfile")
    images = [args.split()[0] for kw, args in instructions if kw == "FROM"]
    assert any(image.startswith("nvidia/cuda:") for image in images)
    for image in images:
        name, _, tag = image.partition(":")
        assert tag and tag != "latest", f"FROM {image} has no fixed tag"
    pip_args = []
    for kw, args in instructions:
        if kw == "RUN":
            for cmd in re.split(r"&&|;", args):
                words = cmd.split()
                if words[:2] == ["pip", "install"]:
                    pip_args += [w.strip("\"'") for w in words[2:] if not w.startswith("-")]
    assert pip_args
    for requirement in pip_args:
        assert requirement == "." or re.fullmatch(r"[\w.\[\],-]+==[\w.]+", requirement), (
            f"unpinned pip requirement {requirement!r}")
    pinned = dict(r.split("==") for r in pip_args if "==" in r)
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
    assert "ray[default,tune]" in pinned and "." in pip_args


def test_dockerfile_images_run_as_non_root():
    stage, users = None, {}
    for kw, args in dockerfile_instructions(INFRA / "Dockerfile"):
        if kw == "FROM":
            stage = args.split()[-1]
            users[stage] = None
        elif kw == "USER":
            users[stage] = args.split(":")[0]
    final_stages = [s for s in users if s != "datasets"]  # datasets is only copied from
    assert final_stages and final_stages[-1] == "saliq"  # the default build target
    for stage in final_stages:
        assert users[stage] not in (None, "root", "0"), f"stage {stage} runs as root"


def test_dockerfile_bundles_fashion_mnist_and_keeps_context_small():
    text = (INFRA / "Dockerfile").read_text()
    assert "dataset-fashion-mnist=" in text
    assert "/usr/share/datasets/fashion-mnist" in text  # where saliq.data looks
    rules = [line for line in (INFRA / "Dockerfile.dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"  # an allowlist: secrets such as infra/.env never enter the context
    assert "!infra/.env" not in rules


# ---- infra/ray-cluster.yaml -----------------------------------------------------------------

def test_cluster_launcher_config():
    config = yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())
    assert config["cluster_name"] and config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    assert isinstance(config["max_workers"], int) and config["max_workers"] > 0
    assert config["docker"]["image"].endswith("saliq:0.1.0")
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    # The launcher's own schema (shipped with Ray) accepts it.
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(config, json.loads(schema_path.read_text()))


# ---- infra/kuberay ------------------------------------------------------------------------------

def load_kind(path: Path, kind: str) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    matches = [d for d in docs if d["kind"] == kind]
    assert len(matches) == 1, f"{path.name} needs exactly one {kind}"
    return matches[0]


def check_cluster_spec(spec: dict) -> None:
    assert spec["authOptions"]["mode"] == "token"
    assert tuple(map(int, spec["rayVersion"].split("."))) >= (2, 52, 0)  # token auth
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert head["template"]["spec"]["containers"][0]["image"].endswith("saliq:0.1.0")
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"]
                  .get("nvidia.com/gpu")]
    assert gpu_groups
    for group in [head, *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert "value" not in env["MLFLOW_TRACKING_PASSWORD"]


def test_kuberay_raycluster():
    path = INFRA / "kuberay" / "raycluster.yaml"
    cluster = load_kind(path, "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    check_cluster_spec(cluster["spec"])
    pvc = load_kind(path, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kuberay_rayjob():
    job = load_kind(INFRA / "kuberay" / "rayjob.yaml", "RayJob")
    assert job["apiVersion"] == "ray.io/v1" and job["metadata"]["name"]
    spec = job["spec"]
    entrypoint = spec["entrypoint"]
    assert "saliq sweep run" in entrypoint and "--address auto" in entrypoint
    tracking = re.search(r"--tracking-uri (\S+)", entrypoint).group(1)
    assert re.fullmatch(r"http://mlflow\.[\w-]+\.svc:5000", tracking)
    assert "--storage /data/saliq-runs" in entrypoint
    assert spec["shutdownAfterJobFinishes"] is True
    check_cluster_spec(spec["rayClusterSpec"])


def test_no_manifest_ships_a_secret_value():
    for path in [*INFRA.rglob("*.yaml"), *INFRA.rglob("*.ini"), INFRA / "Dockerfile"]:
        text = path.read_text()
        assert "password1234" not in text, path
        assert "kind: Secret" not in text, f"{path}: create Secrets by hand, see infra/README.md"
