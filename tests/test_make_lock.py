"""`make lock` builds the locks with a pinned, hash-checked pip-tools in a private folder made for the run, and never
runs a program planted at the old fixed path (any local user could have put one there).

The run is real `make lock` on a copy of the repository's lock inputs, with PYTHON pointing at a stand-in whose
`-m venv DIR` creates recording `pip` and `pip-compile` programs (no download: what is checked is which program runs,
with which arguments, from where)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from tests.support.tools import require_binary
from tests.test_requirements_lock import ROOT, _canonical, _entries, _pins

STUB_PYTHON = r"""#!/bin/sh
# stand-in for `python3 -m venv DIR`
[ "$1" = "-m" ] && [ "$2" = "venv" ] || exit 9
mkdir -p "$3/bin"
for tool in pip pip-compile; do
  cat > "$3/bin/$tool" <<STUB
#!/bin/sh
echo "$tool \$(stat -c '%u %a' "$3/..") \$0 \$*" >> "$LOG"
if [ "$tool" = pip-compile ]; then
  while [ \$# -gt 0 ]; do [ "\$1" = -o ] && echo "# compiled by the stub" > "\$2"; shift; done
fi
STUB
  chmod +x "$3/bin/$tool"
done
"""


def test_make_lock_ignores_a_planted_pip_compile_and_installs_pip_tools_by_hash(tmp_path):
    require_binary("make")
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in ("Makefile", "scripts/lock.sh", "requirements.txt", "requirements-dev.txt", "requirements.lock",
                 "requirements-dev.lock", "requirements-lock-tool.txt", "requirements-lock-tool.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    tmpdir = tmp_path / "tmp"
    planted = tmpdir / "talos-dr-pip-tools" / "bin" / "pip-compile"
    planted.parent.mkdir(parents=True)
    marker = tmp_path / "PLANTED-RAN"
    planted.write_text(f"#!/bin/sh\ntouch {marker}\n")
    planted.chmod(0o755)
    log = tmp_path / "log"
    python = tmp_path / "python"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)

    env = {**os.environ, "TMPDIR": str(tmpdir), "LOG": str(log)}
    res = subprocess.run(["make", "-s", "lock", f"PYTHON={python}"], cwd=repo, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert not marker.exists(), "the planted pip-compile ran"
    runs = [line.split(" ", 4) for line in log.read_text().splitlines()]
    tools = [(r[0], r[4]) for r in runs]
    assert tools[0] == ("pip", "install -q --require-hashes --no-deps -r requirements-lock-tool.lock")
    assert [t for t, _ in tools[1:]] == ["pip-compile", "pip-compile"]
    for tool, uid, mode, path, _args in runs:
        # from a folder this run made, ours and 0700, under TMPDIR but not the old fixed path
        assert Path(path).parent.parent.parent.name.startswith("talos-dr-lock."), path
        assert (int(uid), mode) == (os.getuid(), "700"), (tool, uid, mode)
        assert "talos-dr-pip-tools" not in path
    assert not any(p.name.startswith("talos-dr-lock.") for p in tmpdir.iterdir()), "the private folder is removed"
    assert (repo / "requirements.lock").read_text() == "# compiled by the stub\n"


def test_make_lock_refuses_a_folder_that_is_not_private(tmp_path):
    """A TMPDIR whose folders come out group-writable (a umask of 0) is still fine: mktemp -d makes 0700 regardless;
    a folder we do not own is refused. Here: the check itself, run against a 0777 folder."""
    script = (ROOT / "scripts" / "lock.sh").read_text()
    assert 'stat -c %u "$dir"' in script and '!= 700' in script
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    check = 'dir="$1"; [ "$(stat -c %u "$dir")" != "$(id -u)" ] || [ "$(stat -c %a "$dir")" != 700 ]'
    assert subprocess.run(["bash", "-c", check, "-", str(d)]).returncode == 0  # refused
    d.chmod(0o700)
    assert subprocess.run(["bash", "-c", check, "-", str(d)]).returncode == 1  # accepted
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_the_lock_tool_is_pinned_with_hashes():
    wanted = _pins(ROOT / "requirements-lock-tool.txt")
    assert set(wanted) == {"pip-tools"}
    entries = _entries(ROOT / "requirements-lock-tool.lock")
    pins = _pins(ROOT / "requirements-lock-tool.lock")
    assert pins["pip-tools"] == wanted["pip-tools"]
    # pip-tools and everything it needs (pip and setuptools too: --allow-unsafe), each with at least one SHA-256
    assert {"pip-tools", "pip", "build", "click", "packaging", "pyproject-hooks", "setuptools", "wheel"} <= set(entries)
    assert all(entries[_canonical(n)] for n in entries)
