"""What every bench does with its figures: the load average it ran under, its JSON next to the others, and its own
section of a Markdown results file (``--results bench/RESULTS.md``) between its BEGIN and END markers."""

from __future__ import annotations

import json
from pathlib import Path


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` gives them: a figure is only as good as its machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def write_section(path: Path, text: str, begin: str, end: str) -> None:
    """Replace the section between ``begin`` and ``end`` in ``path`` with ``text`` (which carries both markers), or
    add it at the end when the file has none; the rest of the file is kept."""
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def publish(data: dict, json_path: Path, text: str, results: str | None, begin: str, end: str) -> None:
    """Keep the raw figures (``json_path``), print the Markdown, and put it in ``results`` when asked."""
    json_path.write_text(json.dumps(data, indent=2))
    print(text)
    if results:
        write_section(Path(results), text, begin, end)
