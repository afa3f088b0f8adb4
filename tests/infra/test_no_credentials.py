"""No credential in any config the project ships: cluster configs, KubeRay manifests, terraform,
sweep specs, jobs, scripts and docs are scanned for access keys, secrets, passwords and private
keys written as values (references such as ``${var.x}``, ``$(cmd)``, ``valueFrom`` are fine).
Logs, MLflow params and artifacts are scanned by ``tests/engine/test_trainer.py``."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCANNED = ["cluster", "infra", "search_spaces", "jobs", "README.md", "Makefile", ".ci"]
SUFFIXES = {".yaml", ".yml", ".tf", ".tfvars", ".example", ".tftpl", ".sh", ".py", ".md", ".json", ".ini", ""}

PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "secret value": re.compile(r"(?i)\b(aws_secret_access_key|secret_access_key|secret_key|password|passwd|api_key|"
                               r"token)\b[\"']?\s*[:=]\s*[\"']?(?![$<{(\s\"'])[A-Za-z0-9/+_\-]{8,}"),
}


def _files():
    for entry in SCANNED:
        path = REPO / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                        and ".terraform" not in p.parts and "__pycache__" not in p.parts)


# infra/local/stack.py's fake, recognisable values for moto (which accepts any): allowed on purpose
ALLOWED = ("testing-key-id-123", "testing-secret-key-456")


def find_credentials(text: str) -> list[str]:
    return [f"{name}: {m.group(0)[:40]}" for name, pattern in PATTERNS.items() for m in pattern.finditer(text)
            if not any(fake in m.group(0) for fake in ALLOWED)]


def test_the_scanner_finds_what_it_should():
    assert find_credentials("aws_access_key_id = AKIAABCDEFGHIJKLMNOP")
    assert find_credentials('password: "hunter2hunter2"')
    assert find_credentials("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG")
    assert not find_credentials("admin_password = $(jq -r .password <<<\"$admin\")")
    assert not find_credentials("password = var.db_password")  # a reference, not a value
    assert not find_credentials('"AWS_SECRET_ACCESS_KEY": "testing-secret-key-456"')  # the stack's fake value


def test_no_credential_in_shipped_configs():
    files = list(_files())
    assert any(p.suffix == ".tf" for p in files) and any(p.name == "aws-gpu.yaml" for p in files)
    found = [f"{p.relative_to(REPO)}: {hit}" for p in files for hit in find_credentials(p.read_text(errors="replace"))]
    assert not found, found
