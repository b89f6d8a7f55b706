"""Project files: Pulumi.yaml names the project and its Python toolchain; the stack file carries no secrets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dr.core.outputs import DEFAULT_STACK, PROJECT_NAME
from tests.infra.mocks import ROOT


def test_pulumi_yaml():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT_NAME
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": ".venv"}}


def test_stack_file_has_no_secrets():
    path = ROOT / f"Pulumi.{DEFAULT_STACK}.yaml"
    text = path.read_text()
    assert "secure:" not in text, "secrets never go in the committed stack file"
    config = yaml.safe_load(text)["config"]
    prefixes = {key.split(":", 1)[0] for key in config}
    assert prefixes <= {PROJECT_NAME, "aws"}


@pytest.mark.slow
def test_dynamic_provider_module_imports_cleanly_without_an_engine():
    """The dynamic-provider process imports infra.providers.secret_file by name: it must import with no engine and no mocks."""
    code = "import infra.providers.secret_file, infra.providers.backup_check, infra.config, infra.stack; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
