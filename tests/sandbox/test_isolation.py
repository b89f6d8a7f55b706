"""The sandbox is isolated (first-use review F1): its env file sets every path the DR commands write, so the
sandbox flow run by hand from the repository root (source the env, back up, list, break, restore) leaves the
checkout's own `.talos/` exactly as it was, and everything lands in the sandbox's folder."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests.support.tools import ROOT


def _fingerprint(d: Path) -> dict[str, str] | None:
    """Every file under ``d`` with its size, mtime and hash (None when ``d`` does not exist)."""
    if not d.exists():
        return None
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else "-"
        out[str(p.relative_to(d))] = f"{st.st_mode:o} {st.st_size} {st.st_mtime_ns} {digest}"
    return out


def test_the_hand_run_sandbox_flow_leaves_the_real_talos_dir_alone(sandbox):
    real = ROOT / ".talos"
    before = _fingerprint(real)
    # A user's shell: no virtualenv active, nothing of ours set; only what `. <sandbox>/env` exports.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    script = f"""set -e
. {sandbox.env_file}
command -v talos-dr
talos-dr backup --save-to-s3
talos-dr list
python -m sandbox delete /registry/namespaces/kube-system
talos-dr restore latest --yes
python -m sandbox keys /registry/namespaces/kube-system --list
"""
    res = subprocess.run(["sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[0].endswith("/talos-dr")  # the env puts the venv's talos-dr on PATH
    assert res.stdout.rstrip().endswith("/registry/namespaces/kube-system")  # the deleted key came back

    assert _fingerprint(real) == before  # not one file created, changed or removed
    own = sandbox.dir / "talos"
    assert f"DR_TALOS_DIR='{own}'" in sandbox.env_file.read_text()
    assert list((own / "snapshots").glob("etcd-snapshot-*.db"))
    assert list((own / "snapshots").glob("pre-restore-etcd-snapshot-*.db"))  # the restore's safety snapshot
    assert "127.0.0.3" in (own / "kubeconfig").read_text()  # the kubeconfig a restore writes: the sandbox's own
