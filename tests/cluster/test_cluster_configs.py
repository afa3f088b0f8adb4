"""cluster/: the Ray cluster launcher config against the installed Ray's own schema (what
`ray up` checks), the KubeRay manifests against the KubeRay CRDs' OpenAPI schemas (strict:
an unknown field is an error, as `kubectl apply --validate=strict`), and the runtime env the
configs share."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
SCHEMAS = Path(os.environ.get("DYNVID_KUBERAY_SCHEMAS", REPO.parent / "shared" / "schemas" / "kuberay"))


def _load(path: Path):
    return yaml.safe_load(path.read_text())


# ---- Ray cluster launcher ----------------------------------------------------------------------

def _validate_launcher(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))  # what `ray up` does before validating
    validate_config(prepared)
    return prepared


def test_aws_config_passes_rays_own_validation():
    config = _load(CLUSTER / "aws-gpu.yaml")
    prepared = _validate_launcher(config)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "gpu_8x", "cpu_decode"} and prepared["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}
    assert sum(t.get("max_workers", 0) for t in types.values()) <= prepared["max_workers"]
    for name, t in types.items():  # the head runs the autoscaler: its own profile with EC2 rights
        assert t["node_config"]["IamInstanceProfile"] == {"Name": "dynvid-ray-head" if name == "head"
                                                          else "dynvid-ray-node"}
        assert t["node_config"]["MetadataOptions"] == {"HttpTokens": "required"}
        assert t["node_config"]["ImageId"] == "ami-REPLACE_WITH_RAY_NODE_AMI"  # terraform output ray_node_ami
    assert all(e.startswith("/") or "/" not in e for e in config["rsync_exclude"])  # anchored: keeps dynvid/data/
    assert "/data" in config["rsync_exclude"]
    assert "~/.mlflow/credentials" in config["setup_commands"][2]  # the MLflow login, from Secrets Manager
    # installs the project exactly as the README does (make install), from the mounted repo
    assert config["setup_commands"][0] == "cd ~/dynvid && make install"
    assert list(config["file_mounts"].items()) == [("/home/ubuntu/dynvid", ".")]
    assert "AWS_ENDPOINT_URL" not in yaml.safe_dump(config)


def test_ray_validation_rejects_a_misspelt_field():
    import jsonschema

    config = _load(CLUSTER / "aws-gpu.yaml")
    config["available_node_types"]["gpu_8x"]["max_worker"] = 4  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _validate_launcher(config)


def test_instance_profile_is_the_one_terraform_creates():
    variables = (REPO / "infra" / "terraform" / "variables.tf").read_text()
    storage = (REPO / "infra" / "terraform" / "modules" / "storage" / "main.tf").read_text()
    assert 'default     = "dynvid"' in variables.split('variable "name_prefix"')[1].split("}")[0]
    assert '"${var.name_prefix}-ray-node"' in storage and '"${var.name_prefix}-ray-head"' in storage


# ---- KubeRay -------------------------------------------------------------------------------------

def _strict(schema):
    """The CRD schema with ``additionalProperties: false`` wherever fields are listed and unknown
    ones are not explicitly preserved (Kubernetes prunes them silently; we want to hear)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd(name: str):
    path = SCHEMAS / name
    if not path.is_file():
        pytest.skip(f"KubeRay CRD schema not found at {path} (set DYNVID_KUBERAY_SCHEMAS to its folder)")
    return _load(path)


def _validate_manifest(manifest: dict, crd: dict) -> None:
    import jsonschema

    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    api_group, _, version = manifest["apiVersion"].partition("/")
    assert (api_group, manifest["kind"]) == (group, kind)
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{manifest['apiVersion']} is not a served version of {kind}: {sorted(served)}"
    schema = _strict(served[version]["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator(schema).validate(manifest)


@pytest.mark.parametrize("manifest,crd", [("raycluster.yaml", "ray.io_rayclusters.yaml"),
                                          ("rayjob-vared.yaml", "ray.io_rayjobs.yaml")])
def test_kuberay_manifests_match_the_crds(manifest, crd):
    _validate_manifest(_load(CLUSTER / "kuberay" / manifest), _crd(crd))


def test_strict_kuberay_validation_rejects_unknown_and_mistyped_fields():
    import jsonschema

    crd = _crd("ray.io_rayclusters.yaml")
    bad = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4  # typo of maxReplicas
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        _validate_manifest(bad, crd)
    bad = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    bad["spec"]["workerGroupSpecs"][0]["replicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        _validate_manifest(bad, crd)


def test_cluster_layout_gpu_groups_and_the_kinetics_job():
    cluster = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu-8x"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == 8 and groups["gpu-8x"]["maxReplicas"] >= 1
    job = _load(CLUSTER / "kuberay" / "rayjob-vared.yaml")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    entry = job["spec"]["entrypoint"]
    assert entry.startswith("python /home/ray/dynvid/jobs/vared_kinetics.py") and "kinetics:s3://" in entry


def test_configs_share_the_runtime_env():
    shared = _load(CLUSTER / "runtime_env.yaml")
    job = _load(CLUSTER / "kuberay" / "rayjob-vared.yaml")
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"] == shared["env_vars"]
    head = _load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in head["containers"][0]["env"]}
    for name, value in shared["env_vars"].items():
        assert env[name] == value
    for group in _load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]["workerGroupSpecs"]:
        worker = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        assert worker["RAY_TRAIN_ENABLE_PRINT_PATCH"]["value"] == shared["env_vars"]["RAY_TRAIN_ENABLE_PRINT_PATCH"]
        assert "secretKeyRef" in worker["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]  # rank-0 workers log to MLflow
