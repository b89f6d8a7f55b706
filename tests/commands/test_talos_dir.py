"""`.talos/` is found, not assumed (first-use review F2): the commands use the .talos/ next to the nearest
Pulumi.yaml at or above the current folder, or --talos-dir / DR_TALOS_DIR; from a folder outside any checkout they
say so in one line (never "run `pulumi up`", when the fix is `cd`) and write nothing there."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dr import main as talos_dr
from dr.commands.settings import Resolver, find_project
from dr.core import outputs as keys
from dr.core.errors import ExitCode
from tests.support.tools import ROOT, run_cli


def _resolver(env: dict[str, str], **flags: str) -> Resolver:
    return Resolver(argparse.Namespace(talos_dir=flags.get("talos_dir")), env=env)


def test_found_upward_from_a_subfolder(tmp_path, monkeypatch):
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")
    deep = tmp_path / "infra" / "providers"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert _resolver({}).talos_dir == tmp_path / ".talos"
    monkeypatch.chdir(tmp_path)
    assert _resolver({}).talos_dir == Path(".talos")  # the project folder itself: messages keep reading .talos/...


def test_flag_beats_environment_beats_search(tmp_path, monkeypatch):
    (tmp_path / "Pulumi.yaml").write_text("name: talos-dr\n")
    monkeypatch.chdir(tmp_path)
    assert _resolver({"DR_TALOS_DIR": "/env/dir"}).talos_dir == Path("/env/dir")
    assert _resolver({"DR_TALOS_DIR": "/env/dir"}, talos_dir="/flag/dir").talos_dir == Path("/flag/dir")


def test_the_checkout_is_a_project():
    assert find_project(ROOT / "dr" / "commands") == ROOT


def test_outside_any_checkout_it_says_cd_in_one_line(tmp_path, monkeypatch):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    for k in ("DR_TALOS_DIR", "TALOSCONFIG"):
        monkeypatch.delenv(k, raising=False)
    outputs = tmp_path / "outputs.json"  # the stack is known (a restore reads it first); only the folder is wrong
    outputs.write_text(json.dumps({keys.BUCKET: "b", keys.CONTROLPLANE_CONFIG: "machine: {}"}))
    outputs.chmod(0o600)
    monkeypatch.setenv("DR_STACK_OUTPUTS_FILE", str(outputs))
    for argv in (["backup"], ["list", "--bucket", "b"], ["restore", "latest", "--yes"], ["prune"]):
        res = run_cli(talos_dr.main, *argv)
        assert res.code == ExitCode.CONFIG, (argv, res)
        lines = res.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"talos-dr {argv[0]}: error: no .talos/ here: {outside} "), res
        assert "pulumi up" not in res.err and f"`cd {ROOT}`" in res.err and "--talos-dir" in res.err
    assert list(outside.iterdir()) == []  # no stray .talos/ was created


def test_the_sandbox_env_names_its_own_folder(tmp_path, monkeypatch):
    """With DR_TALOS_DIR set (the sandbox's env file sets it), any folder works and nothing lands in it."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("DR_TALOS_DIR", str(tmp_path / "state"))
    res = run_cli(talos_dr.main, "prune")
    assert res.code == 0, res
    assert list(outside.iterdir()) == []
