"""The docs agree with the code: the configuration and outputs tables with infra/config.py and dr/core/outputs.py,
the deploy, vault and security pages name the commands and choices they must. These tables were in the README;
they now live in docs/DEPLOY.md, docs/VAULT.md and docs/SECURITY.md (found by their BEGIN/END markers wherever they
are). The README itself stays a screen or two: what it is, a diagram, a real demo run, the quick start, 3 a.m."""

from __future__ import annotations

import json
import re

from dr.core import outputs as out
from infra.config import ALL_KEYS, DEFAULTS
from tests.docs.markdown import blocks, section
from tests.infra.mocks import ROOT


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0].startswith("`"):
            rows.append(cells)
    return rows


def literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def test_config_table_lists_every_key_in_order():
    where, text = section("config-table")
    assert where == ROOT / "docs" / "DEPLOY.md"
    keys = [row[0].strip("`") for row in table_rows(text)]
    assert keys == list(ALL_KEYS)


def test_config_table_defaults_match_the_code():
    rows = {row[0].strip("`"): row for row in table_rows(section("config-table")[1])}
    for key, default in DEFAULTS.items():
        cell = rows[key][2]
        if default is None:
            assert cell and not cell.startswith("`None"), f"{key}: say what happens when unset"
        else:
            assert cell == f"`{literal(default)}`", f"docs default of {key} is {cell}, code says {default!r}"
    assert rows["adminCidrs"][2] == "required" and rows["aws:region"][2] == "required"


def test_outputs_table_matches_the_contract():
    where, text = section("outputs-table")
    assert where == ROOT / "docs" / "DEPLOY.md"
    rows = {row[0].strip("`"): row[1] for row in table_rows(text)}
    assert list(rows) == list(out.ALL_OUTPUTS + out.VAULT_OUTPUTS + out.SCHEDULE_OUTPUTS)
    for key, secret in rows.items():
        assert secret == ("yes" if key in out.SECRET_OUTPUTS else "no"), key


def test_deploy_section_names_the_commands_and_choices():
    where, text = section("deploy")
    assert where == ROOT / "docs" / "DEPLOY.md"
    for needle in ("pulumi stack select prod", "pulumi config set --path 'adminCidrs[0]'", "pulumi up",
                   "pulumi state unprotect", "talosctl"):
        assert needle in text, needle
    # Encryption at rest moved with the bucket's rules to the vault page; the maintenance-mode caveat to security.
    assert "SSE-S3" in section("vault")[1]
    security = (ROOT / "docs" / "SECURITY.md").read_text()
    assert "encrypted but not authenticated" in security and "--cert-fingerprint" in security


def test_readme_is_a_screen_or_two():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 250
    kinds = [b.info for b in blocks(ROOT / "README.md")]
    assert "mermaid" in kinds  # the parts and the data flow, drawn by GitHub
    diagram = next(b.text for b in blocks(ROOT / "README.md") if b.info == "mermaid")
    for part in ("Elastic IP", "apid", "etcd", "bucket", "Lambda", "alarms", "talos-dr"):
        assert part in diagram, part
    for heading in ("## Quick start", "## At 3 a.m.", "## What `make demo` shows"):
        assert heading in text, heading
    for cmd in ("make demo", "make test", "talos-dr restore latest"):
        assert cmd in text, cmd


def test_readme_transcript_is_a_real_demo_run():
    """The transcript's lines are ones the demo prints (its phase titles and result line, word for word)."""
    readme = (ROOT / "README.md").read_text()
    transcript = next(b.text for b in blocks(ROOT / "README.md") if "== 1/7" in b.text)
    demo_src = (ROOT / "demo" / "run.py").read_text()
    for title in re.findall(r"== \d/7  (.+?) =+", transcript):
        assert f'"{title}"' in demo_src, title
    assert "result: PASS. Every backed-up key came back with its exact value, and nothing else." in transcript
    for cmd in ("$ talos-dr backup --save-to-s3", "$ talos-dr verify latest", "$ talos-dr list",
                "$ talos-dr restore latest --yes"):
        assert cmd in transcript and cmd in readme


def test_the_offline_wheel_command_names_every_lambda_requirement():
    """A folder filled with the documented offline command must satisfy find_wheels (it once left two wheels out)."""
    from infra.lambda_package import LAMBDA_REQUIREMENTS

    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    command = text.replace("\\\n", " ")  # the command's continuation lines, joined
    (line,) = [ln for ln in command.splitlines() if "-d ./lambda-wheels" in ln]
    assert set(line.split("-d ./lambda-wheels")[1].split()) == set(LAMBDA_REQUIREMENTS)
