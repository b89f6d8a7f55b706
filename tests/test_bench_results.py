"""bench.results: every bench's section of bench/RESULTS.md is replaced in place, the rest of the file kept."""

from __future__ import annotations

import json

from bench.results import load, publish, write_section

B, E = "<!-- BEGIN bench.x -->", "<!-- END bench.x -->"


def test_a_section_is_replaced_in_place_and_the_rest_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Results\n\nintro\n\n{B}\nold figures\n{E}\n\n<!-- BEGIN bench.y -->\nother\n<!-- END bench.y -->\n")
    write_section(path, f"{B}\nnew figures\n{E}\n", B, E)
    text = path.read_text()
    assert "old figures" not in text and f"{B}\nnew figures\n{E}" in text
    assert text.startswith("# Results\n\nintro\n\n") and text.endswith("<!-- BEGIN bench.y -->\nother\n<!-- END bench.y -->\n")


def test_a_missing_section_or_file_is_added_at_the_end(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_section(path, f"{B}\nfirst\n{E}\n", B, E)
    assert path.read_text() == f"\n\n{B}\nfirst\n{E}\n"
    path.write_text("# Results\n")
    write_section(path, f"{B}\nfirst\n{E}\n", B, E)
    assert path.read_text() == f"# Results\n\n{B}\nfirst\n{E}\n"


def test_publish_keeps_the_json_and_writes_the_section_only_when_asked(tmp_path, capsys):
    data = {"rows": [{"s": 1.5}], "load_before": load()}
    assert len(data["load_before"].split()) == 3
    publish(data, tmp_path / "x.json", f"{B}\nt\n{E}\n", None, B, E)
    assert json.loads((tmp_path / "x.json").read_text()) == data and "t" in capsys.readouterr().out
    assert not (tmp_path / "RESULTS.md").exists()
    publish(data, tmp_path / "x.json", f"{B}\nt\n{E}\n", str(tmp_path / "RESULTS.md"), B, E)
    assert f"{B}\nt\n{E}" in (tmp_path / "RESULTS.md").read_text()
