"""The shell blocks the docs mark runnable are run, as written, against the sandbox, so the way a newcomer tries
the project (README, docs/SANDBOX.md) and the 3 a.m. checks (docs/RUNBOOK.md) cannot drift from the code.

- ``<!-- runnable -->`` above a ```sh block: the page's marked blocks, in order, form one script that brings its own
  sandbox up and down. It runs from a copy of the repository root (links to its files, no `.sandbox/` or `.talos/`
  of the developer's), in a bare shell: nothing on PATH but the system's, nothing of ours in the environment.
- ``<!-- runnable in the sandbox -->``: blocks that assume a running cluster: they run after `. <sandbox>/env`, on a
  sandbox whose bucket holds two backups (as an hourly-backed-up cluster's does).

Either way the script must exit 0, and the repository's own `.talos/` must not appear: the sandbox writes its own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.docs.markdown import blocks
from tests.support.tools import ROOT

pytestmark = pytest.mark.slow

IN_SANDBOX = "<!-- runnable in the sandbox -->"


def _marked(path: Path, marker: str) -> list[str]:
    lines = path.read_text().splitlines()
    return [b.text for b in blocks(path) if b.info in ("sh", "bash") and lines[b.line - 2].strip() == marker]


def _repo_copy(tmp_path: Path) -> Path:
    """A folder that looks like the repository root: a link to each of its entries but the local state."""
    root = tmp_path / "repo"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".sandbox", ".talos", ".git", ".pytest_cache"):
            (root / entry.name).symlink_to(entry)
    return root


def _bare_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
            "GRPC_ENABLE_FORK_SUPPORT": "false"}


def _run(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=_bare_env(),
                          capture_output=True, text=True, timeout=timeout)


def _stop_leftover(repo: Path) -> None:
    if (repo / ".sandbox" / "sandbox.json").exists():
        subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "sandbox", "down", "--dir", ".sandbox"],
                       cwd=repo, capture_output=True, timeout=60)


@pytest.mark.parametrize("page", ["README.md", "docs/SANDBOX.md"])
def test_a_pages_try_it_yourself_blocks_run(page, tmp_path):
    scripts = _marked(ROOT / page, "<!-- runnable -->")
    assert scripts, f"{page} marks no block runnable"
    repo = _repo_copy(tmp_path)
    try:
        res = _run("\n".join(scripts), repo)
    finally:
        _stop_leftover(repo)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "restore complete" in res.stdout
    assert not (repo / ".talos").exists()  # the sandbox's files went to .sandbox/talos, not the project's .talos/
    assert list((repo / ".sandbox" / "talos" / "snapshots").glob("etcd-snapshot-*.db"))


def test_the_runbooks_sandbox_blocks_run(sandbox, tmp_path):
    scripts = _marked(ROOT / "docs" / "RUNBOOK.md", IN_SANDBOX)
    assert len(scripts) >= 3, "the triage, find-a-snapshot and backup-now blocks"
    repo = _repo_copy(tmp_path)
    setup = f". {sandbox.env_file}\ntalos-dr backup --save-to-s3 >/dev/null\nsleep 1.1\n" \
            "talos-dr backup --save-to-s3 >/dev/null\n"
    res = _run(setup + "\n".join(scripts), repo)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Server:" in res.stdout and "STATE" in res.stdout and "Running" in res.stdout  # triage checks 2 and 3
    assert "<- latest~1" in res.stdout and res.stdout.count("verified:") == 2
    assert not (repo / ".talos").exists()


def test_a_block_that_fails_fails_the_test(tmp_path):
    """The runner really runs what it is given: a failing line is a failure, not a skip."""
    assert _run("true\nfalse\necho never", tmp_path).returncode != 0
