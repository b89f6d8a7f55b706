"""`python -m demo.ha` (what `make demo-ha` runs) end to end, from a fresh clone: two of three members lost and
restored, then one lost and replaced without a restore; its report's figures are checked against the sandbox's
etcd members as the demo left them (read by the demo per member) and against what it printed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sandbox.api import Sandbox
from sandbox.testing import require_etcd
from tests.demo.test_demo import _env, _processes_mentioning
from tests.support.tools import ROOT

pytestmark = pytest.mark.slow


def test_demo_ha_from_a_fresh_clone(tmp_path):
    require_etcd()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    work, report = tmp_path / "demo", tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "demo.ha", "--dir", str(work), "--keep", "--report", str(report)],
                          cwd=clone, env=_env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-2000:]
    for cmd in ("$ python -m sandbox up --nodes 3", "$ talos-dr backup --save-to-s3", "$ talos-dr verify latest",
                "$ talos-dr restore latest --yes", "$ talos-dr replace-member", "$ pulumi up --refresh",
                "$ python -m sandbox down"):
        assert cmd in out, cmd
    # Two of three lost: replace-member refuses and names the restore, before the restore runs.
    refused = out.index("(exit 31, as it should: REPLACE_REFUSED)")
    assert "talos-dr restore latest" in out[:refused] and refused < out.index("$ talos-dr restore latest --yes")
    assert "result: PASS." in out
    assert not (clone / ".talos").exists()
    assert not Sandbox.load(work / "sandbox").running() and _processes_mentioning(str(work / "sandbox")) == []

    r = json.loads(report.read_text())
    assert r["ok"] is True and r["exit_code"] == 0 and r["sandbox_down"] is True
    assert list(r["phases"]) == ["setup", "cluster", "backup", "disaster", "restore", "check", "lose-one", "replace",
                                 "check-replace", "teardown"]
    c = r["check"]
    assert c["ok"] and c["voters"] == 3 == c["members"] and len(c["per_member"]) == 3
    for per in c["per_member"].values():
        assert per["ok"] and per["identical"] == per["compared"] == r["cluster"]["keys"] > 0
        assert not (per["missing"] or per["wrong"] or per["extra"])
    rep = r["replace"]
    assert len(rep["untouched"]) == 2 and all(rep["untouched"].values())
    assert rep["new_id"] and rep["old_id"] and rep["new_id"] != rep["old_id"] and rep["new_member_keys_identical"]
    # The replacement restored nothing: no snapshot was pushed to a node after the restore.
    replace_out = out[out.index("8/10  Replace the lost member"):out.index("9/10")]
    assert "bootstrap" not in replace_out.lower() and "member replacement complete" in replace_out
