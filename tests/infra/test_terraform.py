"""infra/terraform: ``terraform init`` from the provider mirror on this machine, ``validate`` and
``fmt`` of the whole configuration, then ``plan`` / ``apply`` of the S3 + IAM module against
moto's standalone server on 127.0.0.1 (the local stack's S3 endpoint, which also answers IAM
and STS), checked with boto3: versioning, encryption, public access block, bucket policy, and
least-privilege role policies (actions and resources)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = shutil.which("terraform")
MIRROR = Path(os.environ.get("DYNVID_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))

pytestmark = pytest.mark.skipif(TERRAFORM is None, reason="terraform is not on PATH: install it "
                                "(https://developer.hashicorp.com/terraform/install) to run the infra tests")


def _stack():
    sys.path.insert(0, str(REPO / "infra" / "local"))
    try:
        import stack
    finally:
        sys.path.pop(0)
    return stack


@pytest.fixture(scope="module")
def tf(tmp_path_factory):
    """Runs terraform with a CLI config that installs hashicorp/* from the local mirror (with
    internet, drop TF_CLI_CONFIG_FILE and terraform downloads them); on a copy of
    infra/terraform, so the repository gets no .terraform folder or lock file."""
    if not (MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        pytest.skip(f"no terraform provider mirror with hashicorp/aws at {MIRROR} (set DYNVID_TF_PLUGIN_MIRROR)")
    tmp = tmp_path_factory.mktemp("terraform")
    cli = tmp / "cli.tfrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n'
                   '    include = ["registry.terraform.io/hashicorp/*"]\n  }\n'
                   '  direct {\n    exclude = ["registry.terraform.io/hashicorp/*"]\n  }\n}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
    env.update(TF_CLI_CONFIG_FILE=str(cli), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    root = tmp / "root"
    shutil.copytree(REPO / "infra" / "terraform", root, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))

    def run(*args: str, cwd: Path = root, extra_env: dict | None = None) -> str:
        out = subprocess.run([TERRAFORM, *args, "-no-color"], cwd=cwd, env={**env, **(extra_env or {})},
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise AssertionError(f"terraform {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}"
                                 f"\n{out.stderr[-3000:]}")
        return out.stdout

    run.root = root  # type: ignore[attr-defined]
    return run


def test_whole_configuration_inits_from_the_mirror_validates_and_is_formatted(tf):
    assert "Terraform has been successfully initialized" in tf("init", "-backend=false", "-input=false")
    assert "The configuration is valid" in tf("validate")
    tf("fmt", "-check", "-recursive", cwd=REPO / "infra" / "terraform")
    example = (REPO / "infra" / "terraform" / "terraform.tfvars.example").read_text()
    variables = (REPO / "infra" / "terraform" / "variables.tf").read_text()
    for line in example.splitlines():  # every example setting is a declared variable
        if "=" in line and not line.lstrip().startswith("#"):
            assert f'variable "{line.split("=")[0].strip()}"' in variables, line


def _statements(document) -> dict:
    doc = json.loads(document) if isinstance(document, str) else document
    return {s["Sid"]: s for s in doc["Statement"]}


def _as_list(value) -> list:
    return sorted(value if isinstance(value, list) else [value])


@pytest.mark.integration  # starts the local S3 endpoint
def test_storage_module_applies_against_the_local_endpoint_as_declared(tf, tmp_path):
    import boto3

    stack = _stack()
    s3 = stack.start_s3(tmp_path / "s3")
    try:
        root = tmp_path / "apply"
        root.mkdir()
        (root / "main.tf").write_text(f'''
terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws" }}
  }}
}}
provider "aws" {{
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {{
    s3  = "{s3.url}"
    iam = "{s3.url}"
    sts = "{s3.url}"
  }}
}}
module "storage" {{
  source        = "{tf.root / 'modules' / 'storage'}"
  name_prefix   = "dynvid"
  bucket_name   = "dynvid-tf-test"
  force_destroy = true
}}
''')
        creds = {k: s3.env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
        tf("init", "-input=false", cwd=root, extra_env=creds)
        tf("plan", "-input=false", "-out=plan.bin", cwd=root, extra_env=creds)
        plan = json.loads(tf("show", "-json", "plan.bin", cwd=root, extra_env=creds))
        planned = {r["address"]: r["change"]["after"] for r in plan["resource_changes"]}
        lifecycle = planned["module.storage.aws_s3_bucket_lifecycle_configuration.platform"]["rule"]
        rules = {r["id"]: r for r in lifecycle}
        assert rules["expire-old-checkpoints"]["filter"][0]["prefix"] == "checkpoints/"
        assert rules["expire-old-checkpoints"]["expiration"][0]["days"] == 180
        assert rules["expire-old-checkpoints"]["noncurrent_version_expiration"][0]["noncurrent_days"] == 30
        # Applied: everything but the lifecycle rules, whose apply waits >= 30 s for the provider's
        # steady-state polling (checked in the plan above; applies against moto as well).
        targets = [f"-target={a}" for a in planned if a.startswith("module.storage.aws_") and "lifecycle" not in a]
        tf("apply", "-input=false", "-auto-approve", *targets, cwd=root, extra_env=creds)

        client = dict(endpoint_url=s3.url, region_name="us-east-1", aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])
        b, bucket = boto3.client("s3", **client), "dynvid-tf-test"
        assert b.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
        sse = b.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert sse["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        block = b.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                         "RestrictPublicBuckets": True}
        deny = _statements(b.get_bucket_policy(Bucket=bucket)["Policy"])["DenyInsecureTransport"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        arn = f"arn:aws:s3:::{bucket}"
        assert _as_list(deny["Resource"]) == [arn, f"{arn}/*"]

        iam = boto3.client("iam", **client)
        profile = iam.get_instance_profile(InstanceProfileName="dynvid-ray-node")["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == ["dynvid-ray-node"]  # cluster/aws-gpu.yaml's profile
        trust = iam.get_role(RoleName="dynvid-ray-node")["Role"]["AssumeRolePolicyDocument"]
        assert _statements(trust)["Ec2Nodes"]["Principal"] == {"Service": "ec2.amazonaws.com"}
        ray = _statements(iam.get_role_policy(RoleName="dynvid-ray-node",
                                              PolicyName="s3-datasets-read-checkpoints-rw")["PolicyDocument"])
        assert set(ray) == {"ListBucket", "ReadDatasets", "ReadWriteCheckpoints"}
        assert _as_list(ray["ListBucket"]["Action"]) == ["s3:ListBucket"]  # key names (404 vs 403), no objects
        assert _as_list(ray["ListBucket"]["Resource"]) == [arn]
        assert _as_list(ray["ReadDatasets"]["Action"]) == ["s3:GetObject"]
        assert _as_list(ray["ReadDatasets"]["Resource"]) == [f"{arn}/datasets/*"]
        assert _as_list(ray["ReadWriteCheckpoints"]["Action"]) == ["s3:AbortMultipartUpload", "s3:DeleteObject",
                                                                   "s3:GetObject", "s3:PutObject"]
        assert _as_list(ray["ReadWriteCheckpoints"]["Resource"]) == [f"{arn}/checkpoints/*"]
        mlflow = _statements(iam.get_role_policy(RoleName="dynvid-mlflow-server",
                                                 PolicyName="s3-mlflow-artifacts-rw")["PolicyDocument"])
        assert _as_list(mlflow["ReadWriteArtifacts"]["Resource"]) == [f"{arn}/mlflow/*"]
        head_profile = iam.get_instance_profile(InstanceProfileName="dynvid-ray-head")["InstanceProfile"]
        assert [r["RoleName"] for r in head_profile["Roles"]] == ["dynvid-ray-head"]
        head_s3 = _statements(iam.get_role_policy(RoleName="dynvid-ray-head",
                                                  PolicyName="s3-datasets-read-checkpoints-rw")["PolicyDocument"])
        assert head_s3 == ray  # drivers run on the head: the nodes' S3 access, no more
        autoscaler = _statements(iam.get_role_policy(RoleName="dynvid-ray-head",
                                                     PolicyName="ray-autoscaler")["PolicyDocument"])
        node_role = iam.get_role(RoleName="dynvid-ray-node")["Role"]["Arn"]
        assert "iam:PassRole" in _as_list(autoscaler["PassNodeRole"]["Action"])
        assert node_role in _as_list(autoscaler["PassNodeRole"]["Resource"])  # only the node role is passed
        assert not any(a.startswith(("iam:", "s3:")) for a in _as_list(autoscaler["LaunchWorkers"]["Action"]))
        for doc in (ray, mlflow):  # least privilege: no wildcard action or bucket-wide object access
            for s in doc.values():
                assert s["Effect"] == "Allow" and not any("*" in a for a in _as_list(s["Action"]))
                assert all(r == arn or (r.startswith(f"{arn}/") and r != f"{arn}/*") for r in _as_list(s["Resource"]))
    finally:
        s3.stop()


def test_mlflow_server_bootstrap_renders_to_valid_bash(tf, tmp_path):
    """The server's user_data renders with terraform's own templatefile, and both the bootstrap and
    the start script it installs parse as bash; secrets come from Secrets Manager at start, the
    URL-encoded password has no trailing newline and its % are doubled for configparser."""
    template = tf.root / "modules" / "mlflow" / "user_data.sh.tftpl"
    expr = (f'templatefile("{template}", {{mlflow_version="3.17.2", db_host="db.example", db_secret_arn="arn:db", '
            'admin_secret_arn="arn:admin", artifacts_uri="s3://b/mlflow", port=5000})\n')
    out = subprocess.run([TERRAFORM, "console"], input=expr, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "<<EOT" and lines[-1] == "EOT"
    script = "\n".join(lines[1:-1]) + "\n"
    (tmp_path / "user_data.sh").write_text(script)
    start = script.split("<<'SCRIPT'\n", 1)[1].split("\nSCRIPT\n", 1)[0] + "\n"
    (tmp_path / "mlflow-start").write_text(start)
    for name in ("user_data.sh", "mlflow-start"):
        check = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"
    assert "jq -r '.password|@uri'" in start and "${uri//%/%%}" in start
    assert "MLFLOW_BACKEND_STORE_URI" in start and "--backend-store-uri" not in script  # never on argv
    assert "DB_SECRET_ARN=arn:db" in script and "--app-name basic-auth" in start
