"""A fake `pulumi` executable for the DR commands that drive Pulumi: it records every argv (and stdin, cwd) and answers
as the real CLI does to what the Automation API and dr.rebuild run.

What it answers, and where the real behaviour is written:

* ``version``; ``stack output --json [--show-secrets] --stack S`` (pulumi/automation/_local_workspace.py
  ``stack_outputs``): the outputs file, secrets masked as ``[secret]`` without ``--show-secrets``.
* ``stack init S`` / ``stack select --stack S`` (``create_stack``/``select_stack``): an existing stack fails init with
  "stack 'S' already exists" (the Automation API's ``already_exists_regex``), an unknown one fails select with "no
  stack named 'S' found".
* ``stack export --show-secrets --stack S``: ``{"version": 3, "deployment": {"resources": [...]}}``.
* ``config set --stack S [--secret] KEY`` with the value on stdin (pkg/cmd/pulumi/config/config.go ``configSetCmd``
  reads a non-terminal stdin and drops one trailing newline).
* ``import --yes --skip-preview --file F ... --stack S`` (``Stack.import_resources``): every entry gets the URN the
  engine gives it (pkg/cmd/pulumi/operations/import.go: parent types ``$``-joined, root stack left out; components
  created, IDs required otherwise); a URN already in the state fails the import, as a duplicate does for real.
* ``stack history --json ...``: one summary (what ``Stack.info`` parses after an import).

State lives in ``FAKE_PULUMI_HOME/<stack>.json``: ``{"config": {key: [value, secret]}, "resources": [...]}``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKE_PULUMI = r'''#!{python}
import json, os, sys
argv = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
with open(os.environ["FAKE_PULUMI_LOG"], "a") as f:
    f.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "stdin": stdin,
                        "automation": os.environ.get("PULUMI_AUTOMATION_API")}) + "\n")
home = os.environ.get("FAKE_PULUMI_HOME", "")

def fail(msg, code=255):
    print(msg, file=sys.stderr)
    sys.exit(code)

def flag(name):
    return args[args.index(name) + 1] if name in args else None

def state_path(stack):
    return os.path.join(home, stack + ".json")

def load(stack):
    p = state_path(stack)
    if not os.path.exists(p):
        fail(f"error: no stack named '{stack}' found")
    return json.load(open(p))

def save(stack, st):
    json.dump(st, open(state_path(stack), "w"), indent=1)

if argv == ["version"]:
    if os.environ.get("FAKE_PULUMI_VERSION_EXIT"):  # a broken install: `pulumi version` itself fails
        fail("error: failed to load plugin cache: permission denied", int(os.environ["FAKE_PULUMI_VERSION_EXIT"]))
    print(os.environ.get("FAKE_PULUMI_VERSION", "v3.272.0"))
    sys.exit(0)
args = [a for a in argv if a != "--non-interactive"]
fail_on = os.environ.get("FAKE_PULUMI_FAIL", "")
if fail_on and " ".join(args).startswith(fail_on):
    fail(f"error: {fail_on} failed (FAKE_PULUMI_FAIL)", 1)
if args[:3] == ["stack", "output", "--json"]:
    name = flag("--stack")
    if name not in os.environ.get("FAKE_PULUMI_STACKS", "").split(","):
        fail(f"error: no stack named '{name}' found")
    outputs = json.load(open(os.environ["FAKE_PULUMI_OUTPUTS"]))
    secret = set(os.environ.get("FAKE_PULUMI_SECRETS", "").split(","))
    if "--show-secrets" not in args:
        outputs = {k: ("[secret]" if k in secret else v) for k, v in outputs.items()}
    print(json.dumps(outputs, indent=4))
    sys.exit(0)
if args[:2] == ["stack", "init"]:
    name = args[2]
    if os.path.exists(state_path(name)):
        fail(f"error: stack '{name}' already exists")
    save(name, {"config": {}, "resources": []})
    print(f"Created stack '{name}'")
    sys.exit(0)
if args[:2] == ["stack", "select"]:
    load(flag("--stack"))
    sys.exit(0)
if args[:2] == ["stack", "export"]:
    st = load(flag("--stack"))
    print(json.dumps({"version": 3, "deployment": {"resources": st["resources"]}}))
    sys.exit(0)
if args[:2] == ["stack", "history"]:
    load(flag("--stack"))
    print(json.dumps([{"version": 1, "kind": "import", "startTime": "2026-01-01T00:00:00.000000Z",
                       "endTime": "2026-01-01T00:00:01.000000Z", "message": "", "environment": {}, "config": {},
                       "result": "succeeded"}]))
    sys.exit(0)
if args[:2] == ["config", "set"]:
    name = flag("--stack")
    st = load(name)
    rest = [a for a in args[2:] if a not in ("--secret", "--stack", name)]
    if len(rest) != 1:
        fail("error: the fake takes the value on stdin only")
    value = stdin[:-1] if stdin.endswith("\n") else stdin
    st["config"][rest[0]] = [value, "--secret" in args]
    save(name, st)
    sys.exit(0)
if args[:1] == ["import"]:
    name = flag("--stack")
    st = load(name)
    spec = json.load(open(flag("--file")))
    project = os.environ.get("FAKE_PULUMI_PROJECT", "talos-dr")
    urns = dict(spec.get("nameTable") or {})
    have = {r["urn"] for r in st["resources"]}
    new = []
    for res in spec["resources"]:
        parent = res.get("parent")
        if parent and parent not in urns:
            fail(f"error: the parent '{parent}' for '{res['name']}' has no entry in 'nameTable'")
        ptype = urns[parent].split("::")[2] + "$" if parent else ""
        urn = f"urn:pulumi:{name}::{project}::{ptype}{res['type']}::{res.get('logicalName') or res['name']}"
        if res.get("component") == bool(res.get("id")):
            fail(f"error: '{res['name']}' needs an id unless it is a component")
        if urn in have:
            fail(f"error: resource '{urn}' already exists")
        urns[res["name"]] = urn
        new.append({"urn": urn, "type": res["type"], "id": res.get("id"), "custom": not res.get("component"),
                    "protect": "--protect=true" in args and not res.get("component"),
                    "parent": urns.get(parent)})
        if res["type"] == "talos:machine/secrets:Secrets":  # the provider reads the file named by the ID
            new[-1]["bundle"] = open(res["id"]).read()
    st["resources"] += new
    save(name, st)
    print(f"Resources:\n    + {len(new)} imported")
    sys.exit(0)
fail(f"error: unknown command {argv}", 1)
'''


@dataclass
class FakePulumi:
    """The fake on PATH: its argv log and its per-stack state."""

    home: Path
    log: Path
    outputs: Path

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def argv(self) -> list[list[str]]:
        return [c["argv"] for c in self.calls()]

    def state(self, stack: str) -> dict:
        return json.loads((self.home / f"{stack}.json").read_text())


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePulumi:
    """Put the fake `pulumi` first on PATH for this test."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    exe = bindir / "pulumi"
    exe.write_text(FAKE_PULUMI.replace("{python}", sys.executable, 1))
    exe.chmod(0o755)
    home = tmp_path / "fake-pulumi-state"
    home.mkdir()
    fake = FakePulumi(home=home, log=tmp_path / "pulumi-argv.jsonl", outputs=tmp_path / "fake-outputs.json")
    monkeypatch.setenv("FAKE_PULUMI_HOME", str(home))
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(fake.log))
    monkeypatch.setenv("FAKE_PULUMI_OUTPUTS", str(fake.outputs))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return fake
