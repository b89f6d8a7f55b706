"""One spelling: every hint, resume line, usage line and help example names the command as the user runs it,
``talos-dr <command>`` (dr/core/spelling.py), never ``python -m dr.<command>``, which fails with ModuleNotFoundError
when the virtualenv is not active (first-use review F3)."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pytest

from dr import main as talos_dr
from dr.commands import cli
from dr.core import spelling
from tests.support.tools import ROOT

OLD = "python -m dr."
# What the commands print comes from dr/ (and the demo shows the commands it runs).
PRINTING = [*sorted((ROOT / "dr").rglob("*.py")), *sorted((ROOT / "demo").rglob("*.py"))]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (module, class, function): not printed."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]


def test_no_string_literal_in_the_commands_names_python_m_dr():
    assert len(PRINTING) > 40  # the scan really covers the package
    found = [f"{p.relative_to(ROOT)}:{line}: {text[:80]!r}" for p in PRINTING for line, text in _literals(p)
             if OLD in text]
    assert found == []


def test_the_scan_would_catch_one(tmp_path):
    """The scanner sees a hint in a plain string and in an f-string, and ignores a docstring."""
    f = tmp_path / "m.py"
    f.write_text('"""python -m dr.list in a docstring"""\nX = "run python -m dr.list"\nY = f"`python -m dr.{X}`"\n')
    assert [line for line, text in _literals(f) if OLD in text] == [2, 3]


def test_the_helper_quotes_what_the_shell_would_split():
    assert spelling.command("restore", "latest~1", "--yes") == "talos-dr restore 'latest~1' --yes"
    assert spelling.command("list") == "talos-dr list"
    assert spelling.command("restore", "s3://b/k.db.zst", "--identity", "my key") == \
        "talos-dr restore s3://b/k.db.zst --identity 'my key'"


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as ex:
        talos_dr.main(argv, out=io.StringIO(), err=io.StringIO())
    assert ex.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(talos_dr.COMMANDS))
def test_every_help_names_talos_dr(name, capsys):
    short = _help([name, "-h"], capsys)
    full = _help([name, "--help-all"], capsys)
    assert short.startswith(f"usage: talos-dr {name} ") and f"usage: talos-dr {name}" in full
    assert OLD not in short + full and "python -m" not in short + full
    for line in short.split("examples:\n", 1)[-1].splitlines() if "examples:" in short else []:
        assert line.strip().startswith(f"talos-dr {name}"), line


def test_the_module_entry_point_prints_the_same_spelling(capsys):
    """`python -m dr.list -h` runs the same parser: its usage and examples read `talos-dr list` too."""
    from dr.commands import list as list_cmd

    with pytest.raises(SystemExit):
        list_cmd.main(["-h"])
    out = capsys.readouterr().out
    assert out.startswith("usage: talos-dr list") and OLD not in out


def test_error_lines_name_the_command_as_typed(tmp_path, monkeypatch):
    from tests.support.tools import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DR_TALOS_DIR", str(tmp_path / ".talos"))
    res = run_cli(talos_dr.main, "verify", str(tmp_path / "nope.db"))
    assert res.err.startswith("talos-dr verify: error: snapshot file") and "`talos-dr list`" in res.err
    assert cli.command is spelling.command
