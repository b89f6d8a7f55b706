"""Imports only go down: dr.commands -> dr.adapters -> dr.core; nothing in dr imports infra, sandbox or tests; the
Lambda package imports no command and no deploy-time code (the Lambda's zip holds only what its handler imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package prefix -> what it may not import
RULES = {
    "dr/core": ("dr.adapters", "dr.commands", "infra", "sandbox", "snapshot_lambda", "tests"),
    "dr/adapters": ("dr.commands", "infra", "sandbox", "snapshot_lambda", "tests"),
    "dr/commands": ("infra", "sandbox", "snapshot_lambda", "tests"),
    "snapshot_lambda": ("dr.commands", "infra", "sandbox", "tests"),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("folder", sorted(RULES))
def test_imports_only_go_down(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    bad = []
    for f in files:
        for name in imported(f):
            if any(name == p or name.startswith(p + ".") for p in RULES[folder]):
                bad.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_rule_catches_an_upward_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from dr.commands.cli import run\nimport infra.stack\n")
    assert {"dr.commands.cli", "infra.stack"} <= imported(f)
