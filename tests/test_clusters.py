"""clusters/: the cluster configs pass Ray's own validation and keep what clusters/README.md promises.

Offline and fast: Ray's cluster-launcher schema and default filling (no cloud credentials), Ray's own
translation of a KubeRay RayCluster into an autoscaler config, and the real `tunevision` parser for
every command line the README shows.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config

from tunevision.cli import parser

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
LAUNCHER_CONFIGS = ["aws.yaml", "gcp.yaml"]
TOKEN_FILE = "~/.ray/auth_token"
WHEEL_FOLDER = "./dist"  # built by `pip wheel --no-deps -w dist .`, ignored by git
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.12xlarge": 4, "g5.48xlarge": 8, "g4dn.12xlarge": 4, "g6.12xlarge": 4}
# Flags that another change is adding to the CLI: a README command using one the parser does not have
# yet is parsed without it and then skipped; any other unknown flag fails.
PENDING_FLAGS = {"--resume"}
AUTH_DISABLED = re.compile(r"RAY_AUTH_MODE\W*disabled", re.IGNORECASE)
def _ray_pin():
    """pyproject.toml's requirement on ray: the Ray versions this project is tested with."""
    from packaging.requirements import Requirement

    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    return next(Requirement(line.strip().strip('",')) for line in lines if line.strip().startswith('"ray['))


RAY_PIN = _ray_pin()
RAY_IMAGE = re.compile(r"^rayproject/ray:(?P<version>\d+\.\d+\.\d+)-py3\d+-gpu$")


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTERS / name).read_text())


def _prepared(name: str) -> dict:
    """The config as `ray up` sees it after filling Ray's defaults, validated by Ray's schema."""
    config = prepare_config(_load(name))
    validate_config(config)
    return config


def _worker_types(config: dict) -> dict[str, dict]:
    return {k: v for k, v in config["available_node_types"].items() if k != config["head_node_type"]}


def _gpu_worker(config: dict) -> dict:
    gpu_types = [t for t in _worker_types(config).values() if t["resources"].get("GPU", 0) > 0]
    assert len(gpu_types) == 1, f"expected one GPU worker type, got {len(gpu_types)}"
    return gpu_types[0]


# --- ray up configs (AWS, GCP) -------------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_launcher_config_passes_rays_schema_validation_before_and_after_defaults(name):
    validate_config(_load(name))  # as written (it lists every top-level field, so no defaults needed)
    prepared = _prepared(name)
    assert prepared["provider"]["type"] == name.removesuffix(".yaml")


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_schema_validation_rejects_a_misspelled_node_type_field(name):
    """The validation the other tests rely on bites: a typo in a node type is an error, not ignored."""
    config = _load(name)
    worker = next(iter(_worker_types(config).values()))
    worker["max_worker"] = worker.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(config))


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_gpu_worker_type_advertises_four_gpus_matching_its_machine(name):
    config = _prepared(name)
    worker = _gpu_worker(config)
    gpus = worker["resources"]["GPU"]
    assert gpus == 4
    assert worker["resources"].get("CPU", 0) >= gpus  # data loading needs CPUs beside each GPU
    node = worker["node_config"]
    if name == "aws.yaml":
        assert GPUS_PER_INSTANCE[node["InstanceType"]] == gpus
    else:
        assert sum(a["acceleratorCount"] for a in node["guestAccelerators"]) == gpus
        # GCP rejects GPU instances that may live-migrate; `scheduling` is an object in the API.
        assert isinstance(node["scheduling"], dict)
        assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_head_node_advertises_no_cpu_or_gpu_so_trials_run_on_workers(name):
    config = _prepared(name)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_worker_counts_stay_within_the_global_bound(name):
    config = _prepared(name)
    assert config["available_node_types"][config["head_node_type"]]["max_workers"] == 0
    workers = _worker_types(config).values()
    for node_type in workers:
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]
    assert sum(t["min_workers"] for t in workers) <= config["max_workers"]
    assert _gpu_worker(config)["max_workers"] >= 1


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_every_ray_start_turns_token_auth_on_and_nothing_turns_it_off(name):
    raw = _load(name)
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in raw[key] if "ray start" in c]
    assert any("--head" in c for c in starts) and any("--address" in c for c in starts)
    for command in starts:
        assert "RAY_AUTH_MODE=token" in command, command
    assert not AUTH_DISABLED.search(json.dumps(raw))  # commands, docker options, env: comments excluded
    # The token every node reads from its default place comes from the machine running `ray up`.
    assert raw["file_mounts"][TOKEN_FILE] == TOKEN_FILE


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_head_and_workers_install_tunevision_from_the_mounted_wheel(name):
    config = _prepared(name)
    wheel_mount = next(remote for remote, local in config["file_mounts"].items() if local == WHEEL_FOLDER)
    install = re.compile(rf"^pip install (-q )?{re.escape(wheel_mount)}/tunevision-\*\.whl$")  # with its dependencies
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in by Ray
        steps = [step.strip() for command in config[key] for step in re.split(r"&&|;", command)]
        assert any(install.match(step) for step in steps), f"{key} does not install tunevision"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_file_mounts_copy_folders_of_this_repository(name):
    for remote, local in _load(name)["file_mounts"].items():
        if local.startswith("./") and local != WHEEL_FOLDER:
            assert (ROOT / local).exists(), f"{remote}: {local} is not in the repository"


@pytest.mark.parametrize("name", LAUNCHER_CONFIGS)
def test_nodes_run_a_ray_image_that_pyproject_allows(name):
    image = _load(name)["docker"]["image"]
    match = RAY_IMAGE.match(image)
    assert match and match["version"] in RAY_PIN.specifier, f"{image} is not a Ray that pyproject.toml allows ({RAY_PIN})"


def test_aws_nodes_share_one_ami_and_gpu_workers_have_an_instance_profile_for_s3():
    config = _prepared("aws.yaml")
    amis = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert len(amis) == 1 and re.fullmatch(r"ami-[0-9a-f]{8}(?:[0-9a-f]{9})?", amis.pop())
    assert _gpu_worker(config)["node_config"]["IamInstanceProfile"]["Name"]


def test_gcp_nodes_share_one_image_and_gpu_workers_have_a_service_account_for_gcs():
    config = _prepared("gcp.yaml")
    images = {d["initializeParams"]["sourceImage"] for t in config["available_node_types"].values()
              for d in t["node_config"]["disks"]}
    assert len(images) == 1
    accounts = _gpu_worker(config)["node_config"]["serviceAccounts"]
    assert "https://www.googleapis.com/auth/cloud-platform" in accounts[0]["scopes"]
    assert config["provider"]["project_id"] is None  # `ray up` asks for it instead of creating a project


# --- KubeRay ---------------------------------------------------------------------------------------


def _ray_cluster() -> dict:
    documents = [d for d in yaml.safe_load_all((CLUSTERS / "kuberay.yaml").read_text()) if d]
    assert len(documents) == 1
    return documents[0]


def _ray_containers(cluster: dict) -> list[dict]:
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    return [g["template"]["spec"]["containers"][0] for g in groups]


def test_kuberay_manifest_has_the_fields_the_raycluster_crd_requires():
    cluster = _ray_cluster()
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cluster["metadata"]["name"])
    head = cluster["spec"]["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    workers = cluster["spec"]["workerGroupSpecs"]
    assert workers and len({w["groupName"] for w in workers}) == len(workers)
    for group in workers:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in _ray_containers(cluster):
        assert container["name"] and container["image"]
        assert container["resources"]["limits"]["cpu"] and container["resources"]["limits"]["memory"]


def test_kuberay_manifest_translates_into_a_valid_autoscaler_config():
    cluster = copy.deepcopy(_ray_cluster())
    cluster["metadata"].setdefault("namespace", "default")  # what `kubectl apply` fills in
    config = _derive_autoscaling_config_from_ray_cr(cluster)  # Ray's KubeRay autoscaler; runs validate_config
    types = config["available_node_types"]
    head = types.pop("headgroup")
    assert head["resources"]["CPU"] == 0 and head["resources"].get("GPU", 0) == 0
    (gpu,) = types.values()
    assert gpu["resources"]["GPU"] == 4 and gpu["resources"]["CPU"] >= 4
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1


def test_kuberay_gpu_workers_request_whole_gpus_and_tolerate_gpu_taints():
    for group in _ray_cluster()["spec"]["workerGroupSpecs"]:
        resources = group["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "4"
        tolerations = group["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in tolerations)


def test_kuberay_ray_containers_and_autoscaler_take_one_token_from_a_secret():
    cluster = _ray_cluster()
    envs = [c["env"] for c in _ray_containers(cluster)] + [cluster["spec"]["autoscalerOptions"]["env"]]
    secrets = set()
    for env in envs:
        by_name = {e["name"]: e for e in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token"
        ref = by_name["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        secrets.add((ref["name"], ref["key"]))
        assert "value" not in by_name["RAY_AUTH_TOKEN"]  # never the token itself in the manifest
    assert len(secrets) == 1
    assert not AUTH_DISABLED.search(json.dumps(cluster))


def test_kuberay_containers_install_tunevision_then_run_the_generated_ray_start():
    cluster = _ray_cluster()
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert cluster["spec"]["rayVersion"] in RAY_PIN.specifier
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        match = RAY_IMAGE.match(container["image"])
        assert match and match["version"] == cluster["spec"]["rayVersion"]
        script = " ".join(container["args"])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        wheel_volume = next(v for v in pod["volumes"] if "configMap" in v)
        assert re.search(rf"pip install .*{re.escape(mounts[wheel_volume['name']])}/tunevision-\*\.whl", script)
        # With the annotation KubeRay runs only this command: without the generated one Ray never starts.
        assert script.rstrip().endswith("$KUBERAY_GEN_RAY_START_CMD")
        assert script.index("pip install") < script.index("$KUBERAY_GEN_RAY_START_CMD")


# --- README commands -------------------------------------------------------------------------------

SUBCOMMANDS = {"search", "check", "predict", "backbones"}
SHELL_OPERATORS = {"&&", "||", ";", "|", "&"}


def _split(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def _commands_in(tokens: list[str]) -> list[list[str]]:
    """Every `tunevision SUBCOMMAND ...` in a shell line's tokens, quoted ones (`ray exec "..."`) too."""
    found = []
    for i, token in enumerate(tokens):
        if token == "tunevision" and i + 1 < len(tokens) and tokens[i + 1] in SUBCOMMANDS:
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in SHELL_OPERATORS), len(tokens))
            found.append(tokens[i:end])
        elif token.startswith("tunevision "):
            found += _commands_in(_split(token))
    return found


def readme_commands() -> list[list[str]]:
    text = (CLUSTERS / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            commands += _commands_in(_split(line))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if span.startswith("tunevision "):
            commands += _commands_in(_split(span))
    return commands


def _known_flags(subcommand: str) -> set[str]:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return set(sub.choices[subcommand]._option_string_actions)


README_COMMANDS = readme_commands()


@pytest.mark.parametrize("command", README_COMMANDS, ids=[f"{i}-{' '.join(c[1:3])}" for i, c in enumerate(README_COMMANDS)])
def test_readme_command_parses_with_the_real_cli(command, capsys):
    known = _known_flags(command[1])
    missing = sorted({t.split("=")[0] for t in command if t.split("=")[0] in PENDING_FLAGS - known})
    args = [t for t in command[1:] if t.split("=")[0] not in missing]
    try:
        parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{shlex.join(command)}\n{capsys.readouterr().err}")
    if missing:
        pytest.skip(f"the parser has no {', '.join(missing)} yet; the rest of the command parses")


def test_readme_shows_cluster_searches_with_address_storage_resume_and_gpu_sharing():
    searches = [c for c in README_COMMANDS if c[1] == "search"]
    assert len(searches) >= 6
    assert all("--address" in c for c in searches if "--storage" in c)
    for flag in ("--address", "--storage", "--tracking-uri", "--resume"):
        assert any(flag in c for c in searches), flag
    assert any(c[c.index("--gpus-per-trial") + 1] == "0.5" for c in searches if "--gpus-per-trial" in c)
