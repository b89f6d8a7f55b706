"""Reading the project's Markdown: files, fenced blocks, links, anchors (GitHub's rules), marked sections."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tests.support.tools import ROOT

# What a reader of the repository opens: the README, docs/, and the pages next to the code.
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "sandbox" / "CONFORMANCE.md",
        ROOT / "bench" / "RESULTS.md"]
RUNNABLE = "<!-- runnable -->"  # the line above a ```sh block that the docs tests run, in order, on the sandbox

_FENCE = re.compile(r"^(```|~~~)(.*)$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    runnable: bool


def blocks(path: Path) -> list[Block]:
    """Every fenced code block, with whether the line above it marks it runnable."""
    out, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m:
            start, fence = i, m.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].startswith(fence):
                j += 1
            prev = lines[start - 1].strip() if start else ""
            out.append(Block(path, start + 1, m.group(2).strip(), "\n".join(lines[start + 1:j]), prev == RUNNABLE))
            i = j + 1
        else:
            i += 1
    return out


def prose(path: Path) -> str:
    """The file without its fenced blocks (links in code are not links)."""
    text, out, inside = path.read_text().splitlines(), [], None
    for line in text:
        m = _FENCE.match(line)
        if m and (inside is None or line.startswith(inside)):
            inside = None if inside else m.group(1)
            out.append("")
            continue
        out.append("" if inside else line)
    return "\n".join(out)


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(re.sub(r"`[^`\n]*`", "", prose(path)))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(path).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    out |= set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', path.read_text()))
    return out


def section(name: str) -> tuple[Path, str]:
    """The one Markdown file holding ``<!-- BEGIN name -->...<!-- END name -->``, and that text."""
    found = []
    for p in DOCS:
        m = re.search(rf"<!-- BEGIN {re.escape(name)} -->(.*?)<!-- END {re.escape(name)} -->", p.read_text(), re.S)
        if m:
            found.append((p, m.group(1)))
    assert len(found) == 1, f"section {name!r} is in {[str(p) for p, _ in found] or 'no file'}, not in exactly one"
    return found[0]
