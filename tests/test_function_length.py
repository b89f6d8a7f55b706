"""No program function is over MAX_LINES lines, Pulumi component constructors included: a function longer than a
screen or two cannot be held in one head, and the next person to extend it will make it longer still.

Counted with the AST, from the ``def`` line to the function's last line (docstring, comments and blank lines
included: they are read too). Nested functions count on their own and inside their parent. Split a long function
into helpers named after what each part does (``infra/schedule.py``'s ``SnapshotSchedule`` is the model for a
Pulumi component: ``_credential``, ``_network``, ``_runner``, ``_schedule``, ``_watch``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 120
# The program: the DR commands, the Pulumi program and its components, the Lambda, the sandbox, the demo.
PROGRAM = ("dr", "infra", "sandbox", "snapshot_lambda", "demo")
PROGRAM_FILES = ("__main__.py",)

# Functions allowed over MAX_LINES for now, each at most at the length it had when it was listed: it may shrink, never
# grow. Remove an entry once its function is split (test_the_allow_list_is_not_stale says when). Keep it empty where
# possible; every entry names its file, its function and its length when listed, so whoever shrinks it finds it.
ALLOWED: dict[str, int] = {
    # "sandbox/talosctl/cli.py:main": 130,  (the form of an entry: "path:Qualified.name": lines when listed)
}


def program_files() -> list[Path]:
    files = [ROOT / f for f in PROGRAM_FILES if (ROOT / f).exists()]
    for top in PROGRAM:
        files += sorted((ROOT / top).rglob("*.py"))
    return [f for f in files if "__pycache__" not in f.parts]


def function_lengths(path: Path) -> dict[str, int]:
    """``{"Qualified.name": lines}`` for every function and method in ``path``."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                end = child.end_lineno or child.lineno
                lengths[name] = max(lengths.get(name, 0), end - child.lineno + 1)
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return lengths


def all_lengths() -> dict[str, int]:
    return {f"{path.relative_to(ROOT).as_posix()}:{name}": n
            for path in program_files() for name, n in function_lengths(path).items()}


def test_the_counter_counts_methods_nested_functions_and_constructors(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("class C:\n    def __init__(self):\n        def inner():\n            pass\n        x = 1\n\n"
                      "def f():\n    return 1\n")
    assert function_lengths(sample) == {"C.__init__": 4, "C.__init__.inner": 2, "f": 2}


def test_the_program_is_found():
    names = all_lengths()
    assert any(k.startswith("infra/schedule.py:SnapshotSchedule.__init__") for k in names)
    assert any(k.startswith("dr/main.py:") for k in names) and any(k.startswith("sandbox/") for k in names)


def test_no_program_function_is_over_the_limit():
    lengths = all_lengths()
    offenders = sorted(((n, name) for name, n in lengths.items()
                        if n > MAX_LINES and n > ALLOWED.get(name, 0)), reverse=True)
    assert not offenders, (
        f"{len(offenders)} function(s) over {MAX_LINES} lines (or longer than their allow-list entry); split each "
        "into helpers named after what the parts do:\n" + "\n".join(f"  {n:4d}  {name}" for n, name in offenders))


def test_the_allow_list_is_not_stale():
    """An entry whose function is gone or now within the limit is removed, so the list only ever shrinks."""
    lengths = all_lengths()
    stale = [name for name in ALLOWED if lengths.get(name, 0) <= MAX_LINES]
    assert not stale, f"remove these from ALLOWED in {Path(__file__).name}: they are within {MAX_LINES} lines now: {stale}"
