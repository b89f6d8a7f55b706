"""The restore's local files: the kubeconfig is 0600 before talosctl writes a byte, and the
machine-config temporary file a SIGKILL can leave in .talos/ is swept at the next start."""

from __future__ import annotations

import os
import tempfile

import pytest

from dr.commands.restore import steps
from dr.core.errors import ConfigError, NodeError


class FakeTalosctl:
    def __init__(self, fail: bool = False):
        self.fail = fail
        self.modes: list[int] = []

    def kubeconfig(self, path, timeout: float = 60) -> None:
        self.modes.append(os.stat(path).st_mode & 0o777)  # what the file is when talosctl opens it
        if self.fail:
            raise NodeError("kubeconfig failed")
        with open(path, "w") as f:  # os.WriteFile on an existing file: truncate, keep the mode
            f.write("apiVersion: v1\n")


def test_kubeconfig_is_precreated_0600(tmp_path):
    t = FakeTalosctl()
    old = os.umask(0)
    try:
        path = steps.kubeconfig(t, tmp_path)
    finally:
        os.umask(old)
    assert t.modes == [0o600]
    assert path.read_text() == "apiVersion: v1\n" and path.stat().st_mode & 0o777 == 0o600


def test_an_existing_open_kubeconfig_is_closed_before_talosctl_writes(tmp_path):
    (tmp_path / "kubeconfig").write_text("old")
    os.chmod(tmp_path / "kubeconfig", 0o644)
    t = FakeTalosctl()
    steps.kubeconfig(t, tmp_path)
    assert t.modes == [0o600]


def test_a_symlinked_kubeconfig_is_refused(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    os.chmod(victim, 0o644)
    (tmp_path / "kubeconfig").symlink_to(victim)
    t = FakeTalosctl()
    with pytest.raises(ConfigError, match="symbolic link"):
        steps.kubeconfig(t, tmp_path)
    assert t.modes == [] and victim.read_text() == "keep" and victim.stat().st_mode & 0o777 == 0o644


def test_a_failed_kubeconfig_leaves_no_empty_file(tmp_path):
    with pytest.raises(NodeError):
        steps.kubeconfig(FakeTalosctl(fail=True), tmp_path)
    assert not (tmp_path / "kubeconfig").exists()
    (tmp_path / "kubeconfig").write_text("old")
    with pytest.raises(NodeError):
        steps.kubeconfig(FakeTalosctl(fail=True), tmp_path)
    assert (tmp_path / "kubeconfig").read_text() == "old"  # not ours: kept


def test_controlplane_leftovers_are_swept_and_nothing_else(tmp_path):
    fd, name = tempfile.mkstemp(prefix=".controlplane-", suffix=".yaml", dir=tmp_path)  # as apply_config makes it
    os.close(fd)
    keep = [".controlplane-notmine.yaml.bak", "controlplane-abcdefgh.yaml", ".controlplane-abc.yaml", "talosconfig"]
    for k in keep:
        (tmp_path / k).write_text("x")
    (tmp_path / ".controlplane-linklink.yaml").symlink_to(tmp_path / "talosconfig")
    (tmp_path / ".controlplane-dirdirdi.yaml").mkdir()
    removed = steps.sweep_controlplane_temps(tmp_path)
    assert [p.name for p in removed] == [os.path.basename(name)]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*keep, ".controlplane-linklink.yaml", ".controlplane-dirdirdi.yaml"])
    assert steps.sweep_controlplane_temps(tmp_path / "missing") == []


def test_files_of_another_user_are_not_swept(tmp_path, monkeypatch):
    fd, name = tempfile.mkstemp(prefix=".controlplane-", suffix=".yaml", dir=tmp_path)
    os.close(fd)
    monkeypatch.setattr(steps.os, "getuid", lambda: os.stat(name).st_uid + 1)
    assert steps.sweep_controlplane_temps(tmp_path) == [] and os.path.exists(name)
