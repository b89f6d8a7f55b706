"""Where restore learns the cluster: the Pulumi Automation API (against a fake `pulumi` executable that answers
as the real CLI does) and the outputs-file alternative."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from dr.adapters import stack_outputs as stack
from dr.commands import restore
from dr.core import outputs as keys
from dr.core.errors import ConfigError, ExitCode
from tests.commands.restore.test_restore import FAST, assert_restored, backup_a_then_write_b
from tests.support.tools import run_cli

# What `pulumi` answers to the commands LocalWorkspace.stack_outputs runs (pulumi/automation/_local_workspace.py:
# `pulumi version`, then `stack output --json --stack S` (secrets masked) and the same with --show-secrets).
FAKE_PULUMI = """#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_PULUMI_LOG"], "a") as f:
    f.write(json.dumps({{"argv": argv, "cwd": os.getcwd(),
                        "automation": os.environ.get("PULUMI_AUTOMATION_API")}}) + "\\n")
if argv == ["version"]:
    if os.environ.get("FAKE_PULUMI_VERSION_EXIT"):  # a broken install: `pulumi version` itself fails
        print("error: failed to load plugin cache: permission denied", file=sys.stderr)
        sys.exit(int(os.environ["FAKE_PULUMI_VERSION_EXIT"]))
    print(os.environ.get("FAKE_PULUMI_VERSION", "v3.272.0"))
    sys.exit(0)
args = [a for a in argv if a != "--non-interactive"]
if args[:3] == ["stack", "output", "--json"]:
    name = args[args.index("--stack") + 1]
    if name not in os.environ["FAKE_PULUMI_STACKS"].split(","):
        print(f"error: no stack named '{{name}}' found", file=sys.stderr)
        sys.exit(255)
    outputs = json.load(open(os.environ["FAKE_PULUMI_OUTPUTS"]))
    secret = set(os.environ["FAKE_PULUMI_SECRETS"].split(","))
    if "--show-secrets" not in args:
        outputs = {{k: ("[secret]" if k in secret else v) for k, v in outputs.items()}}
    print(json.dumps(outputs, indent=4))
    sys.exit(0)
print(f"error: unknown command {{argv}}", file=sys.stderr)
sys.exit(1)
"""


@pytest.fixture
def fake_pulumi(tmp_path, monkeypatch):
    """A `pulumi` on PATH serving the outputs written to the returned file; returns (outputs_path, log_path)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    exe = bindir / "pulumi"
    exe.write_text(FAKE_PULUMI.format(python=sys.executable))
    exe.chmod(0o755)
    outputs, log = tmp_path / "fake-outputs.json", tmp_path / "pulumi-argv.jsonl"
    monkeypatch.setenv("FAKE_PULUMI_OUTPUTS", str(outputs))
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(log))
    monkeypatch.setenv("FAKE_PULUMI_STACKS", "prod")
    monkeypatch.setenv("FAKE_PULUMI_SECRETS", ",".join(keys.SECRET_OUTPUTS))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv(stack.OUTPUTS_FILE_ENV, raising=False)
    monkeypatch.delenv(stack.STACK_ENV, raising=False)
    return outputs, log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_automation_api_adapter_contract(fake_pulumi, tmp_path):
    outputs, log = fake_pulumi
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(f"name: {keys.PROJECT_NAME}\nruntime: python\n")
    values = {keys.BUCKET: "b", keys.NODE_PUBLIC_IP: "203.0.113.7", keys.CONTROLPLANE_CONFIG: "machine: {}\n",
              keys.TALOSCONFIG: "context: x\n"}
    outputs.write_text(json.dumps(values))
    got = stack.load_stack_outputs("prod", work_dir=project)
    assert got.values == values
    assert got.secret_keys == {keys.CONTROLPLANE_CONFIG, keys.TALOSCONFIG}
    assert got.source == "stack prod"
    calls = _calls(log)
    assert [c["argv"] for c in calls] == [
        ["version"],
        ["--non-interactive", "stack", "output", "--json", "--stack", "prod"],
        ["--non-interactive", "stack", "output", "--json", "--show-secrets", "--stack", "prod"],
    ]
    assert all(c["cwd"] == str(project) for c in calls[1:])
    assert all(c["automation"] == "true" for c in calls[1:])


@pytest.mark.slow
def test_restore_reads_the_cluster_through_the_automation_api(sandbox_env, fake_pulumi):
    sb = sandbox_env
    outputs, log = fake_pulumi
    outputs.write_text(sb.outputs_file.read_text())
    backup_a_then_write_b(sb)
    log.unlink(missing_ok=True)
    res = run_cli(restore.main, "latest", "--yes", "--stack", "prod", *FAST, stdin=io.StringIO(""))
    assert_restored(sb, res)
    shown = [c["argv"] for c in _calls(log)]
    assert ["--non-interactive", "stack", "output", "--json", "--show-secrets", "--stack", "prod"] in shown


def test_missing_pulumi_cli_is_a_config_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv(stack.OUTPUTS_FILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    res = run_cli(restore.main, "latest", "--yes", stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert "Pulumi CLI was not found" in res.err and "--outputs-file" in res.err
    assert not (tmp_path / ".talos" / "restore-journal.json").exists()


def test_missing_stack_is_a_config_error(fake_pulumi, tmp_path, monkeypatch):
    outputs, _log = fake_pulumi
    outputs.write_text("{}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    res = run_cli(restore.main, "latest", "--yes", "--stack", "staging", stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert "'staging' was not found" in res.err and "pulumi stack ls" in res.err
    with pytest.raises(ConfigError, match="'staging' was not found"):
        stack.load_stack_outputs("staging", work_dir=tmp_path)


def test_outputs_file_problems_are_config_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    monkeypatch.delenv(stack.OUTPUTS_FILE_ENV, raising=False)
    res = run_cli(restore.main, "latest", "--yes", "--outputs-file", str(tmp_path / "nope.json"),
                  stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert "does not exist" in res.err and "pulumi stack output --json --show-secrets" in res.err
    masked = tmp_path / "masked.json"
    masked.write_text(json.dumps({keys.CONTROLPLANE_CONFIG: "[secret]", keys.BUCKET: "b"}))
    masked.chmod(0o600)
    monkeypatch.setenv(stack.OUTPUTS_FILE_ENV, str(masked))
    res = run_cli(restore.main, "latest", "--yes", stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert "--show-secrets" in res.err


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_an_outputs_file_others_can_read_is_refused(tmp_path, monkeypatch, mode):
    """Security M5: the outputs file holds every secret output; like the talosconfig it must be private."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    monkeypatch.delenv(stack.OUTPUTS_FILE_ENV, raising=False)
    f = tmp_path / "outputs.json"
    f.write_text(json.dumps({keys.BUCKET: "b", keys.CLUSTER_NAME: "c"}))
    f.chmod(mode)
    with pytest.raises(ConfigError) as info:
        stack.load_outputs_file(f)
    assert info.value.exit_code == ExitCode.CONFIG and f"mode {mode:04o}" in info.value.message
    assert f"chmod 600 {f}" in info.value.hint and "umask 077" in info.value.hint
    monkeypatch.setenv(stack.OUTPUTS_FILE_ENV, str(f))
    res = run_cli(restore.main, "latest", "--yes", stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert "chmod 600" in res.err
    f.chmod(0o600)
    assert stack.load_outputs_file(f).get(keys.BUCKET) == "b"


@pytest.mark.parametrize("version,words", [
    # pulumi/automation/_cmd.py _parse_and_validate_pulumi_version, against the SDK's minimum (3.1.0)
    ("v2.25.2", "Minimum version requirement failed"),
    ("not-a-version", "Could not parse the Pulumi CLI version"),
])
def test_unusable_cli_version_is_a_config_error(fake_pulumi, tmp_path, monkeypatch, version, words):
    monkeypatch.setenv("FAKE_PULUMI_VERSION", version)
    monkeypatch.delenv("PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK", raising=False)
    with pytest.raises(ConfigError) as info:
        stack.load_stack_outputs("prod", work_dir=tmp_path)
    assert words in str(info.value) and "cannot be used" in str(info.value)
    assert "--outputs-file" in str(info.value) and "pulumi.com/docs/install" in str(info.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")  # a project folder: its .talos/ is used
    res = run_cli(restore.main, "latest", "--yes", stdin=io.StringIO(""))
    assert res.code == ExitCode.CONFIG, res
    assert words in res.err and "Traceback" not in res.err


def test_failing_pulumi_version_is_a_config_error(fake_pulumi, tmp_path, monkeypatch):
    _outputs, log = fake_pulumi
    monkeypatch.setenv("FAKE_PULUMI_VERSION_EXIT", "3")
    with pytest.raises(ConfigError) as info:
        stack.load_stack_outputs("prod", work_dir=tmp_path)
    msg = str(info.value)
    assert "`pulumi version` failed (exit 3)" in msg and "--outputs-file" in msg
    assert [c["argv"] for c in _calls(log)] == [["version"]], "nothing else is run after the version check fails"
