"""The README's configuration and outputs tables agree with infra/config.py and dr/core/outputs.py."""

from __future__ import annotations

import json
import re

from dr.core import outputs as out
from infra.config import ALL_KEYS, DEFAULTS
from tests.infra.mocks import ROOT


def section(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- BEGIN {re.escape(name)} -->(.*?)<!-- END {re.escape(name)} -->", text, re.S)
    assert match, f"README has no {name} section"
    return match.group(1)


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
    keys = [row[0].strip("`") for row in table_rows(section("config-table"))]
    assert keys == list(ALL_KEYS)


def test_config_table_defaults_match_the_code():
    rows = {row[0].strip("`"): row for row in table_rows(section("config-table"))}
    for key, default in DEFAULTS.items():
        cell = rows[key][2]
        if default is None:
            assert cell and not cell.startswith("`None"), f"{key}: say what happens when unset"
        else:
            assert cell == f"`{literal(default)}`", f"README default of {key} is {cell}, code says {default!r}"
    assert rows["adminCidrs"][2] == "required" and rows["aws:region"][2] == "required"


def test_outputs_table_matches_the_contract():
    rows = {row[0].strip("`"): row[1] for row in table_rows(section("outputs-table"))}
    assert list(rows) == list(out.ALL_OUTPUTS + out.VAULT_OUTPUTS + out.SCHEDULE_OUTPUTS)
    for key, secret in rows.items():
        assert secret == ("yes" if key in out.SECRET_OUTPUTS else "no"), key


def test_deploy_section_names_the_commands_and_choices():
    text = section("deploy")
    for needle in ("pulumi stack select prod", "pulumi config set --path 'adminCidrs[0]'", "pulumi up",
                   "SSE-S3", "pulumi state unprotect", "talosctl"):
        assert needle in text, needle


def test_the_offline_wheel_command_names_every_lambda_requirement():
    """A folder filled with the README's offline command must satisfy find_wheels: a requirement the command leaves
    out would make an offline `pulumi up` fail on a machine that cannot download it."""
    from infra.lambda_package import LAMBDA_REQUIREMENTS

    text = (ROOT / "README.md").read_text().replace("\\\n", " ")  # one line per shell command
    (line,) = [ln for ln in text.splitlines() if "-d ./lambda-wheels" in ln]
    assert set(line.partition("-d ./lambda-wheels")[2].split()) == set(LAMBDA_REQUIREMENTS)
