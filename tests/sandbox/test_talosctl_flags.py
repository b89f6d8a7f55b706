"""The fake talosctl parses flags the cobra/pflag way, strictly."""

from __future__ import annotations

import pytest

from sandbox.talosctl import UsageError, parse, parse_duration


@pytest.mark.parametrize(
    ("argv", "command", "checks", "args"),
    [
        (["-n", "1.2.3.4", "etcd", "snapshot", "x.db"], "etcd snapshot", {"nodes": ["1.2.3.4"]}, ["x.db"]),
        (["etcd", "snapshot", "--nodes=1.2.3.4", "x.db"], "etcd snapshot", {"nodes": ["1.2.3.4"]}, ["x.db"]),
        (["reset"], "reset", {"graceful": True, "reboot": False, "wait": True, "timeout": 1800.0,
                              "system-labels-to-wipe": []}, []),
        (["reset", "--graceful=false", "--reboot", "--system-labels-to-wipe=STATE",
          "--system-labels-to-wipe", "EPHEMERAL", "--timeout", "90s"], "reset",
         {"graceful": False, "reboot": True, "system-labels-to-wipe": ["STATE", "EPHEMERAL"], "timeout": 90.0}, []),
        (["reset", "--system-labels-to-wipe=STATE,EPHEMERAL", "--wait=false"], "reset",
         {"system-labels-to-wipe": ["STATE", "EPHEMERAL"], "wait": False}, []),
        (["apply", "--insecure", "-n", "10.0.0.1", "-f", "cp.yaml", "-p", "@a.yaml", "--config-patch", "{a: 1,b: 2}",
          "-m", "reboot"], "apply-config",
         {"insecure": True, "file": "cp.yaml", "config-patch": ["@a.yaml", "{a: 1,b: 2}"], "mode": "reboot"}, []),
        (["bootstrap", "--recover-from", "s.db", "--recover-skip-hash-check"], "bootstrap",
         {"recover-from": "s.db", "recover-skip-hash-check": True}, []),
        (["health", "--wait-timeout", "10m", "--control-plane-nodes", "1.2.3.4", "--server=false"], "health",
         {"wait-timeout": 600.0, "control-plane-nodes": ["1.2.3.4"], "server": False}, []),
        (["kubeconfig", "out", "--force", "--merge=false"], "kubeconfig", {"force": True, "merge": False}, ["out"]),
        (["get", "machinestatus", "--insecure", "-o", "jsonpath={.spec.stage}"], "get",
         {"insecure": True, "output": "jsonpath={.spec.stage}"}, ["machinestatus"]),
        (["--talosconfig", "tc", "--context", "c", "version", "-i"], "version",
         {"talosconfig": "tc", "context": "c", "insecure": True}, []),
        (["-e", "1.1.1.1", "-n1.1.1.1", "version"], "version", {"endpoints": ["1.1.1.1"], "nodes": ["1.1.1.1"]}, []),
        (["kubeconfig", "-f", "out", "-m=false"], "kubeconfig", {"force": True, "merge": False}, ["out"]),
        (["apply", "-f", "cp.yaml", "-m", "no-reboot"], "apply-config", {"file": "cp.yaml", "mode": "no-reboot"}, []),
    ],
)
def test_parse_accepts_talosctl_syntax(argv, command, checks, args):
    cmd, values, positional = parse(argv)
    assert cmd == command
    for k, v in checks.items():
        assert values[k] == v, k
    assert positional == args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["etcd", "snapshot", "x", "--foo"], "unknown flag: --foo"),
        (["version", "--graceful=false"], "unknown flag: --graceful"),  # a reset flag is not a version flag
        (["etcd", "snapshot", "--insecure", "x"], "unknown flag: --insecure"),
        (["bootstrap", "-x"], "unknown shorthand flag: 'x' in -x"),
        (["frobnicate"], 'unknown command "frobnicate" for "talosctl"'),
        (["etcd", "defrag"], 'unknown command "defrag" for "talosctl etcd"'),
        (["etcd", "snapshot"], "accepts 1 arg(s), received 0"),
        (["reset", "--graceful=maybe"], 'invalid argument "maybe" for "--graceful" flag'),
        (["reset", "--timeout", "soon"], 'time: invalid duration "soon"'),
        (["apply-config", "--file"], "flag needs an argument: --file"),
        (["bootstrap", "extra"], "accepts 0 arg(s), received 1"),
    ],
)
def test_parse_refuses_like_cobra(argv, message):
    with pytest.raises(UsageError) as ei:
        parse(argv)
    assert message in str(ei.value)


def test_parse_duration_go_syntax():
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("10")


@pytest.mark.slow
def test_wrapper_exits_1_on_unknown_flag(shared):
    r = shared.talosctl_run("etcd", "snapshot", "x.db", "--foo")
    assert r.returncode == 1
    assert r.stderr.startswith("Error: unknown flag: --foo")
    r = shared.talosctl_run("snapshot")
    assert r.returncode == 1 and 'unknown command "snapshot"' in r.stderr
    assert shared.calls()[-1]["argv"] == ["snapshot"] and shared.calls()[-1]["exit"] == 1
