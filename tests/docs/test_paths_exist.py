"""Every repository path the Markdown names exists: a maintainer who follows `tests/restore/test_plan.py` from a
document to a file that was moved long ago stops trusting the document.

A path is a backticked span or a link target whose first segment is a top-level folder of this repository
(`dr/…`, `tests/…`, `sandbox/…`), or a top-level file (`requirements.lock`); a trailing `:line`, `::test` or
`#anchor` is dropped, and a glob must match something. Link targets are read relative to the document, the way a
Markdown viewer follows them. A backticked dotted name under one of our packages (`dr.adapters.store.newest`,
`snapshot_lambda.handler.handler`) must be a module, or a name that module defines or imports. Paths in fenced code
blocks are commands, not references, and are left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_DIRS = frozenset(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
TOP_FILES = frozenset(p.name for p in ROOT.iterdir() if p.is_file() and not p.name.startswith("."))
# Not the repository's: what a deployment or a run creates, named in the documents on purpose.
NOT_REPO_DIRS = frozenset({"snapshots", "lambda-wheels", "node_modules", "build", "dist"})

# Paths a document may name though they do not exist, while it is being fixed elsewhere. Each is listed with its
# document; remove an entry once the document is fixed (test_the_allow_list_is_not_stale says when). Never add a path
# here to make a new document pass.
KNOWN_STALE: dict[str, set[str]] = {}  # document -> paths it may still name though they are gone (none now)


def documents() -> list[Path]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "sandbox" / "CONFORMANCE.md",
            ROOT / "bench" / "RESULTS.md", *sorted((ROOT / "tests").rglob("README*"))]
    return [d for d in docs if d.is_file()]


_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _clean(token: str) -> str:
    token = token.strip().strip(",;()[]\"'")
    token = token.split("::", 1)[0].split("#", 1)[0]
    return re.sub(r":\d[\d,\-]*$", "", token)  # path:line, path:10-20, path:1,5


def _looks_like_a_path(token: str) -> bool:
    if not token or any(c in token for c in "<>{}$…|=") or "..." in token or token.startswith(("/", "~", "http")):
        return False
    first, sep, _rest = token.partition("/")
    if sep:
        return first in TOP_DIRS and first not in NOT_REPO_DIRS
    return token in TOP_FILES


_PACKAGES = ("dr", "infra", "sandbox", "snapshot_lambda", "bench", "demo")
_DOTTED = re.compile(r"^(" + "|".join(_PACKAGES) + r")(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def _module_name_exists(dotted: str) -> bool:
    """``dr.adapters.store.newest``: the longest prefix that is a module, then the next part defined (or imported)
    there; what follows that (a method, an attribute) is not checked."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        for source in (base.with_suffix(".py"), base / "__init__.py"):
            if source.is_file():
                if i == len(parts):
                    return True
                name = re.escape(parts[i])
                return re.search(rf"^\s*(async\s+)?(def|class)\s+{name}\b|^\s*{name}\s*[:=]|^\s*{name},?$"
                                 rf"|^\s*(from\s+\S+\s+)?import\b.*\b{name}\b", source.read_text(), re.M) is not None
        if i == len(parts) and base.is_dir():
            return True
    return False


def _exists(path: Path) -> bool:
    if any(c in path.name for c in "*?["):
        return any(path.parent.glob(path.name))
    return path.exists()


def named_paths(doc: Path, text: str | None = None) -> set[str]:
    """The repository paths ``doc`` (or ``text``, read as if it were ``doc``) names that do not exist, relative to
    the repo root."""
    text = _FENCE.sub("", doc.read_text() if text is None else text)
    missing: set[str] = set()
    for span in _SPAN.findall(text):
        for token in span.split():
            token = _clean(token)
            if _looks_like_a_path(token) and not _exists(ROOT / token):
                missing.add(token)
            dotted = token.rstrip(".").removesuffix("()")
            if _DOTTED.match(dotted) and not _module_name_exists(dotted):
                missing.add(dotted)
    for target in _LINK.findall(text):
        if target.startswith(("http:", "https:", "mailto:", "#")):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if path.is_relative_to(ROOT) and not _exists(path):
            missing.add(path.relative_to(ROOT).as_posix())
    return missing


def test_the_finder_sees_spans_links_lines_and_tests():
    text = (
        "See `dr/nope.py:12`, `tests/core/test_nope.py::test_x` and `infra/schedule.py` (real), "
        "[the runbook](RUNBOOK.md), [gone](GONE.md), `python -m dr.backup`, `snapshots/<name>.zst`,\n"
        "`dr.adapters.store.newest` `dr.adapters.store.no_such` `dr.nowhere.thing` `infra.schedule`,\n"
        "```\ncat dr/in_a_fence.py\n```\n`talos-dr restore --talos-dir tests/also_missing/`")
    assert named_paths(ROOT / "docs" / "x.md", text) == {"dr/nope.py", "tests/core/test_nope.py", "docs/GONE.md",
                                                         "tests/also_missing/", "dr.adapters.store.no_such",
                                                         "dr.nowhere.thing"}


@pytest.mark.parametrize("doc", documents(), ids=lambda d: d.relative_to(ROOT).as_posix())
def test_every_path_a_document_names_exists(doc):
    name = doc.relative_to(ROOT).as_posix()
    missing = named_paths(doc) - KNOWN_STALE.get(name, set())
    assert not missing, f"{name} names paths that do not exist (moved or renamed? fix the document): {sorted(missing)}"


def test_the_allow_list_is_not_stale():
    fixed = {doc: sorted(paths - named_paths(ROOT / doc)) for doc, paths in KNOWN_STALE.items()}
    fixed = {doc: paths for doc, paths in fixed.items() if paths}
    assert not fixed, f"these exist now or are no longer named; remove them from KNOWN_STALE: {fixed}"
