"""The three-node talosctl reads: `etcd members` parsed from the table talosctl v1.13.9 prints (its own format strings
in cmd/talosctl/cmd/talos/etcd.go etcdMemberListCmd, laid out as Go's text/tabwriter does with padding 3), and the
commands the HA restore sends (`get machinetype`, `health` over every node)."""

from __future__ import annotations

from pathlib import Path

from dr.adapters.talosctl import Talosctl, parse_members

# etcd.go:239-258 at v1.13.9: the header and the row pattern, with and without the NODE column.
HEADER_NODE = "NODE\tID\tHOSTNAME\tPEER URLS\tCLIENT URLS\tLEARNER"
HEADER = "ID\tHOSTNAME\tPEER URLS\tCLIENT URLS\tLEARNER"


def tabwriter(lines: list[str], padding: int = 3) -> str:
    """Go's tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0): every tab-terminated cell padded to its column's
    widest cell plus ``padding``; the last cell of a line is not padded."""
    rows = [ln.split("\t") for ln in lines]
    width: dict[int, int] = {}
    for r in rows:
        for i, c in enumerate(r[:-1]):
            width[i] = max(width.get(i, 0), len(c))
    return "".join("".join(c.ljust(width[i] + padding) for i, c in enumerate(r[:-1])) + r[-1] + "\n" for r in rows)


def row(*cells) -> str:
    return "\t".join("true" if c is True else "false" if c is False else str(c) for c in cells)


def test_members_with_node_column():
    out = tabwriter([HEADER_NODE,
                     row("cp-1", "3b3ed4a0b9e7e1d4", "cp-1", "https://10.0.1.5:2380", "https://10.0.1.5:2379", False),
                     row("cp-1", "a1b2c3d4e5f60718", "cp-2", "https://10.0.2.5:2380", "https://10.0.2.5:2379", True)])
    ms = parse_members(out)
    assert [(m.id, m.hostname, m.peer_urls, m.client_urls, m.is_learner) for m in ms] == [
        ("3b3ed4a0b9e7e1d4", "cp-1", ("https://10.0.1.5:2380",), ("https://10.0.1.5:2379",), False),
        ("a1b2c3d4e5f60718", "cp-2", ("https://10.0.2.5:2380",), ("https://10.0.2.5:2379",), True)]


def test_members_without_node_column_and_an_unstarted_learner():
    # A member added as a learner that has not started has no name and no client URLs (empty cells).
    out = tabwriter([HEADER,
                     row("3b3ed4a0b9e7e1d4", "cp-1", "https://10.0.1.5:2380,https://[fd00::1]:2380",
                         "https://10.0.1.5:2379", False),
                     row("00000000000000ff", "", "https://10.0.3.5:2380", "", True)])
    ms = parse_members(out)
    assert ms[0].peer_urls == ("https://10.0.1.5:2380", "https://[fd00::1]:2380")
    assert ms[0].hosts() >= {"10.0.1.5", "fd00::1"}
    assert (ms[1].hostname, ms[1].peer_urls, ms[1].client_urls, ms[1].is_learner) == (
        "", ("https://10.0.3.5:2380",), (), True)


def test_no_table_no_members():
    assert parse_members("") == []
    assert parse_members("error getting members: rpc error\n") == []


def test_commands_name_each_node_and_every_control_plane_node(monkeypatch):
    t = Talosctl("10.0.2.5", Path("/t"), binary="talosctl", endpoint="203.0.113.2")
    sent: list[list[str]] = []

    class Done:
        returncode, stdout, stderr = 0, "controlplane\n", ""

    monkeypatch.setattr("subprocess.run", lambda cmd, **kw: sent.append(cmd) or Done())
    assert t.machine_type() == "controlplane"
    t.health(wait_timeout="5s", timeout=10, control_plane_nodes=["10.0.1.5", "10.0.2.5", "10.0.3.5"])
    assert sent[0][-4:] == ["get", "machinetype", "-o", "jsonpath={.spec}"]
    assert sent[0][1:7] == ["--talosconfig", "/t", "--nodes", "10.0.2.5", "--endpoints", "203.0.113.2"]
    assert sent[1][-2:] == ["--control-plane-nodes", "10.0.1.5,10.0.2.5,10.0.3.5"]
