"""The three-node demo (`make demo-ha`): a three-member cluster is backed up, loses two members with their disks and is
restored from the backup; then it loses one member and gets it back with `talos-dr replace-member`, no restore.

    python -m demo.ha                       # what `make demo-ha` runs
    python -m demo.ha --dir /tmp/d --keep   # keep the folder (snapshots, logs) afterwards
    python -m demo.ha --report report.json  # also write the figures as JSON

As in `make demo` (demo/run.py, whose helpers this reuses), every DR step runs as the command a user would type, in a
subprocess with the sandbox's environment, in a folder of its own; the sandbox is taken down at the end whatever
happens. What a user does by hand is done by the demo and said so: `pulumi up --refresh` rebuilding a lost instance
is the sandbox's ``replace_instance`` (a new instance with the same private IP and an empty etcd, configured as
`pulumi up` would). Exit 0 only when, after the restore, all three members vote and each holds every backed-up key
with its exact value; and when, after the member replacement, the two members that stayed hold exactly what they
held before (the same member IDs, every key and value) and the new one holds the same.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from demo.run import (
    APP_NAMESPACE,
    KV,
    Demo,
    StepFailed,
    app_objects,
    compare,
    counts_by_type,
    read_all,
    run_guarded,
)
from dr.core import spelling
from dr.core.errors import ExitCode

PHASES = ("setup", "cluster", "backup", "disaster", "restore", "check", "lose-one", "replace", "check-replace",
          "teardown")
LOST_IN_DISASTER = (2, 3)  # two of three: the quorum is gone
LOST_ALONE = 3  # then one: the other two keep the quorum


@dataclass
class HAReport:
    ok: bool = False
    exit_code: int = 1
    failed_step: str | None = None
    error: str | None = None
    dir: str = ""
    cluster: dict[str, Any] = field(default_factory=dict)
    backup: dict[str, Any] = field(default_factory=dict)
    disaster: dict[str, Any] = field(default_factory=dict)
    check: dict[str, Any] = field(default_factory=dict)
    replace: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    sandbox_down: bool = False
    total_seconds: float = 0.0


class HADemo(Demo):
    """`make demo`'s runner (commands shown as typed, output indented, the sandbox always taken down), for three
    nodes."""

    def __init__(self, base: Path, out: TextIO):
        super().__init__(base, out, None)
        self.report = HAReport(dir=str(base))  # type: ignore[assignment]

    @contextmanager
    def phase(self, key: str, title: str) -> Iterator[None]:
        self.current = key
        n = PHASES.index(key) + 1
        self.say(f"\n== {n}/{len(PHASES)}  {title} " + "=" * max(3, 68 - len(title)))
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.report.phases[key] = round(time.monotonic() - t0, 3)

    # --- helpers --------------------------------------------------------------------------------------------------

    def talosctl(self, step: str, *args: str, check: bool = True) -> int:
        """The sandbox's talosctl with its talosconfig (every node in it), shown as `$ talosctl ...`."""
        import shlex

        self.say(f"$ talosctl {shlex.join(args)}")
        proc = subprocess.run([str(self.sb.talosctl), "--talosconfig", str(self.sb.talosconfig), *args],
                              cwd=self.base, env=self.env(), text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120)
        for line in proc.stdout.splitlines():
            self.say(f"    {line}")
        if check and proc.returncode != 0:
            raise StepFailed(step, proc.returncode, f"`talosctl {shlex.join(args)}` failed with exit code "
                                                    f"{proc.returncode}")
        return proc.returncode

    def run_expecting(self, step: str, code: int, *args: str) -> None:
        """A command that must fail with ``code`` (a refusal the demo shows on purpose)."""
        try:
            self.run(step, *args)
        except StepFailed as exc:
            if exc.code == code:
                self.say(f"    (exit {code}, as it should: {ExitCode(code).name})")
                return
            raise
        raise StepFailed(step, int(ExitCode.ERROR), f"`{' '.join(args)}` succeeded; it should have refused "
                                                    f"with exit {code}")

    def run_with(self, step: str, when: str, action: Callable[[], None], *args: str) -> None:
        """Run a command and, once it prints a line containing ``when``, do ``action`` (what the user does in
        another terminal meanwhile) while the command keeps running."""
        done = False

        def watch(line: str) -> None:
            nonlocal done
            if not done and when in line:
                done = True
                action()

        self.run(step, *args, on_line=watch)
        if not done:
            raise StepFailed(step, int(ExitCode.ERROR), f"`{' '.join(args)}` never printed {when!r}")

    def members(self) -> list[dict]:
        return list(self.sb.etcd_members())

    def member_kvs(self) -> dict[str, KV]:
        """Every key and value, read from each member's own etcd (not through one of them)."""
        out = {}
        for m in self.members():
            urls = [u for u in m.get("client_urls") or () if u]
            if urls:
                out[str(m["name"])] = read_all(urls[0])
        return out

    def show_members(self) -> list[dict]:
        ms = self.members()
        for m in ms:
            self.say(f"    member {m['id'] if isinstance(m['id'], str) else format(m['id'], '016x')}  "
                     f"{m['name'] or '(not started)':<20} {'learner' if m['is_learner'] else 'voter'}")
        return ms

    def rebuild(self, *nodes: int) -> None:
        """What `pulumi up --refresh` does for terminated instances: new ones, the same private IPs, configured."""
        which = " and ".join(f"node {i} ({self.sb.members[i - 1].private_ip})" for i in nodes)
        self.say(f"$ pulumi up --refresh    # sandbox stand-in: a new instance for {which}, same private IP, "
                 "its machine config applied, an empty etcd")
        for i in nodes:
            self.sb.replace_instance(i)

    # --- phases ---------------------------------------------------------------------------------------------------

    def setup(self) -> None:
        with self.phase("setup", "Start a three-node sandbox cluster"):
            self.say("Three simulated Talos nodes, each with its own addresses, apid and a real etcd member of one "
                     f"three-member cluster, plus a local S3 server, all in {self.base}.\nNothing here touches AWS, "
                     "a real cluster, or your own .talos/ folder.")
            self.run("setup", "sandbox", "up", "--nodes", "3", "--dir", str(self.sandbox_dir))
            from sandbox.api import Sandbox
            from sandbox.pki import ClusterSecrets

            self.sb = Sandbox.load(self.sandbox_dir)
            self.say(f"$ . {self.sb.env_file}    # the commands below run with this environment, in {self.base}")
            box = ClusterSecrets.load(self.sb.paths.secrets).bundle["secrets"]["secretboxencryptionsecret"]
            app = app_objects(box)
            for k, v in app.items():
                self.sb.put(k, v)
            self.say(f"added a small application: namespace {APP_NAMESPACE!r} with {len(app) - 1} objects")

    def show_cluster(self) -> KV:
        with self.phase("cluster", "What the cluster holds, on each member"):
            for h in self.sb.members:
                self.say(f"    node {h.index}: {h.hostname:<20} private IP {h.private_ip:<11} Elastic IP {h.public_ip}")
            first = self.sb.members[0]
            self.talosctl("cluster", "-n", first.private_ip, "-e", first.public_ip, "etcd", "members")
            per = self.member_kvs()
            states = list(per.values())
            if len(per) != 3 or any(s != states[0] for s in states):
                raise StepFailed("cluster", int(ExitCode.ERROR), "the three members do not hold the same keys")
            state = states[0]
            self.say(f"each of the {len(per)} members holds the same {len(state)} keys; Kubernetes objects per type:")
            self.table(counts_by_type(state), ("resource type", "objects"))
            self.report.cluster = {"keys": len(state), "members": len(per), "resources": counts_by_type(state)}
            return state

    def backup(self, state: KV) -> KV:  # type: ignore[override]
        with self.phase("backup", "Back up to S3 (from a healthy member), and prove the backup restores"):
            self.run("backup", spelling.PROG, "backup", "--save-to-s3")
            self.run("verify", spelling.PROG, "verify", "latest")
            self.report.backup = {"keys": len(state)}
            return state

    def lose_two(self) -> None:
        with self.phase("disaster", "Two of three nodes are lost, with their disks: no quorum"):
            for i in LOST_IN_DISASTER:
                self.sb.lose(i, disk=True)
                self.say(f"node {i} ({self.sb.members[i - 1].private_ip}): instance terminated, its disks lost")
            first = self.sb.members[0]
            self.say("node 1 still runs, but one member of three is no quorum: etcd answers nothing")
            self.talosctl("disaster", "-n", first.private_ip, "-e", first.public_ip, "etcd", "members", check=False)
            self.say("one lost member could be replaced without a restore; two cannot, and talos-dr says so:")
            self.run_expecting("disaster", int(ExitCode.REPLACE_REFUSED), spelling.PROG, "replace-member",
                               self.sb.members[LOST_IN_DISASTER[-1] - 1].private_ip, "--yes")
            self.say("rebuild the two lost instances (`pulumi up --refresh`); their etcd waits for a bootstrap:")
            self.rebuild(*LOST_IN_DISASTER)
            self.report.disaster = {"lost": list(LOST_IN_DISASTER), "disks_lost": True}

    def restore_ha(self) -> None:
        with self.phase("restore", "Restore the newest backup onto the three nodes"):
            self.run("restore", spelling.PROG, "restore", "latest", "--yes")

    def check_all(self, expected: KV, key: str = "check") -> dict[str, KV]:
        """All three members voting, and each holding every backed-up key with its exact value."""
        ms = self.show_members()
        voters = [m for m in ms if not m["is_learner"]]
        per = self.member_kvs()
        results = {name: compare(expected, kv) for name, kv in per.items()}
        for name, c in results.items():
            self.say(f"    {name:<20} {c.identical:>4} of {c.compared} backed-up keys identical; {len(c.missing)} "
                     f"missing, {len(c.wrong)} wrong, {len(c.extra)} extra")
        ok = len(voters) == 3 and len(results) == 3 and all(c.ok for c in results.values())
        if key == "check":
            self.report.check = {"voters": len(voters), "members": len(ms), "ok": ok,
                                 "per_member": {n: asdict(c) | {"ok": c.ok} for n, c in results.items()}}
        if not ok:
            raise StepFailed(key, int(ExitCode.VERIFY_MISMATCH),
                             f"{len(voters)} of 3 members vote; keys identical per member: "
                             + ", ".join(f"{n} {c.identical}/{c.compared}" for n, c in results.items()))
        return per

    def check_restore(self, expected: KV) -> dict[str, KV]:
        with self.phase("check", "All three members voting, each with every backed-up key?"):
            per = self.check_all(expected)
            self.say(f"all three members vote, and each holds all {len(expected)} backed-up keys, value for value")
            return per

    def lose_one(self) -> dict[str, Any]:
        with self.phase("lose-one", "One node is lost, with its disk: the other two keep the quorum"):
            before = {m["name"]: m["id"] for m in self.members()}
            kept = [h for h in self.sb.members if h.index != LOST_ALONE]
            kv_before = {n: kv for n, kv in self.member_kvs().items()}
            self.sb.lose(LOST_ALONE, disk=True)
            lost = self.sb.members[LOST_ALONE - 1]
            self.say(f"node {LOST_ALONE} ({lost.private_ip}): instance terminated, its disk lost")
            first = self.sb.members[0]
            self.say("the lost member is still listed: the other two are a quorum of the three, so etcd answers")
            self.talosctl("lose-one", "-n", first.private_ip, "-e", first.public_ip, "etcd", "members")
            return {"before_ids": before, "kept": [h.hostname for h in kept], "kv_before": kv_before,
                    "lost": lost}

    def replace(self, ctx: dict[str, Any]) -> None:
        with self.phase("replace", "Replace the lost member: no restore"):
            lost = ctx["lost"]
            self.run_with("replace", "Run this now, in another terminal", lambda: self.rebuild(LOST_ALONE),
                          spelling.PROG, "replace-member", lost.private_ip, "--yes", "--poll-interval", "500ms")

    def check_replace(self, ctx: dict[str, Any], expected: KV) -> None:
        with self.phase("check-replace", "The others untouched, the new member voting with every key?"):
            after_ids = {m["name"]: m["id"] for m in self.members()}
            per = self.check_all(expected, key="check-replace")
            untouched = {}
            for name in ctx["kept"]:
                same_id = after_ids.get(name) == ctx["before_ids"].get(name)
                same_kv = per.get(name) == ctx["kv_before"].get(name)
                untouched[name] = same_id and same_kv
                self.say(f"    {name:<20} same member ID: {'yes' if same_id else 'NO'}; every key and value as "
                         f"before the loss: {'yes' if same_kv else 'NO'}")
            new_name = ctx["lost"].hostname
            new_id = after_ids.get(new_name)
            self.report.replace = {"untouched": untouched, "old_id": ctx["before_ids"].get(new_name), "new_id": new_id,
                                   "new_member_keys_identical": per.get(new_name) == expected}
            if not all(untouched.values()) or new_id is None or new_id == ctx["before_ids"].get(new_name):
                raise StepFailed("check-replace", int(ExitCode.VERIFY_MISMATCH),
                                 f"after the replacement: others untouched {untouched}, new member {new_id}")
            self.say(f"the two members that stayed were not touched; {new_name} is a new member "
                     f"({ctx['before_ids'].get(new_name)} removed, {new_id} joined) with every key")

    def summary(self) -> None:  # type: ignore[override]
        r = self.report
        self.say("\n== Report " + "=" * 69)
        if r.cluster:
            self.say(f"cluster:   3 members, {r.cluster['keys']} keys on each")
        if r.check:
            self.say(f"restore:   two of three members lost with their disks; after `{spelling.command('restore')} "
                     f"latest`: {r.check['voters']} voting members, each with every backed-up key")
        if r.replace:
            self.say(f"replace:   one member lost; `{spelling.command('replace-member')}` without a restore: the "
                     "other two untouched, the new member voting with every key")
        self.say("time per phase:")
        for k, v in r.phases.items():
            self.say(f"    {k:<14} {v:>7.1f}s")
        self.say(f"    {'total':<14} {r.total_seconds:>7.1f}s")
        self.say(f"sandbox:   {'taken down' if r.sandbox_down else 'STILL RUNNING: python -m sandbox down --dir ' + str(self.sandbox_dir)}")
        self.say("\nresult: PASS." if r.ok else f"\nresult: FAIL at step {r.failed_step!r}: {r.error}")


def run_phases(demo: HADemo) -> None:
    demo.setup()
    state = demo.show_cluster()
    expected = demo.backup(state)
    demo.lose_two()
    demo.restore_ha()
    demo.check_restore(expected)
    ctx = demo.lose_one()
    demo.replace(ctx)
    demo.check_replace(ctx, expected)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    p = argparse.ArgumentParser(prog="python -m demo.ha", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="work folder (default: a new temporary folder, removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (snapshots, logs, journals)")
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    args = p.parse_args(argv)
    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="talos-dr-demo-ha-"))
    base.mkdir(parents=True, exist_ok=True)
    demo = HADemo(base, out)
    demo.say("talos-dr three-node demo: lose two of three members and restore; lose one and replace it.\n"
             "It runs the same commands you would (each shown as `$ talos-dr ...`, its output indented below):\n"
             "  1 start three sandbox nodes   2 what each member holds   3 back up to S3 and verify\n"
             "  4 lose two nodes and their disks (no quorum)             5 restore the backup\n"
             "  6 three voting members, each with every key              7 lose one node and its disk\n"
             "  8 replace its member (no restore)                        9 the others untouched, every key back\n"
             "  10 take the sandbox down (always, also when something fails)")
    return run_guarded(demo, lambda: run_phases(demo), base=base, kept=f"logs in {demo.sandbox_dir / 'logs'}",
                       report=args.report, keep=args.keep, temporary=not args.dir)


if __name__ == "__main__":
    from dr.commands.cli import sigterm_as_interrupt

    sigterm_as_interrupt()
    sys.exit(main())

