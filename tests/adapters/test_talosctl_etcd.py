"""The member list parser (``dr.adapters.talosctl.parse_members``, shared with the three-node restore) against
talosctl's own `etcd members` format (tests/golden/talosctl/etcd-members-*.txt, rendered from siderolabs/talos
v1.13.9's format strings), and dr/adapters/talosctl_etcd.py's remove-member answers, through a stand-in talosctl
binary that prints what the real one prints (a shell script: the real talosctl needs a real node)."""

from __future__ import annotations

import stat

import pytest

from dr.adapters import talosctl_etcd
from dr.adapters.talosctl import Talosctl, parse_members
from dr.core import member_repair as mr
from dr.core.errors import NodeUnreachable
from tests.adapters.test_talosctl import transcript


def test_three_voters():
    ms = parse_members(transcript("etcd-members-three-voters.txt"))
    assert [mr.hex_id(m) for m in ms] == ["2a4a5a0c1b3e2f11", "8e9e05c52164694d", "5d2f3a6e9c8b7a12"]
    assert [m.hostname for m in ms] == ["ip-10-0-1-5", "ip-10-0-2-5", "ip-10-0-3-5"]
    assert ms[1].peer_urls == ("https://10.0.2.5:2380",) and ms[1].client_urls == ("https://10.0.2.5:2379",)
    assert ms[1].hosts() == {"10.0.2.5"} and not any(m.is_learner for m in ms)


def test_an_unstarted_learner_has_empty_cells():
    ms = parse_members(transcript("etcd-members-unstarted-learner.txt"))
    new = ms[2]
    assert (new.hostname, new.client_urls, new.is_learner) == ("", (), True)
    assert new.peer_urls == ("https://10.0.3.5:2380",) and mr.parse_member_id(new.id) == 0x3C7D1E2F4A5B6C7D


def test_without_the_node_column_and_with_several_urls():
    text = ("ID                 HOSTNAME   PEER URLS                                     CLIENT URLS   LEARNER\n"
            "00000000000000aa   cp-1       https://10.0.1.5:2380,https://[fd00::5]:2380   https://x:2379   false\n")
    [m] = parse_members(text)
    assert m.id == "00000000000000aa" and {"10.0.1.5", "fd00::5"} <= m.hosts()


def test_no_output_is_no_members():
    assert parse_members("") == []


def _fake(tmp_path, stdout: str, stderr: str, code: int) -> Talosctl:
    exe = tmp_path / "talosctl"
    (tmp_path / "out").write_text(stdout)
    (tmp_path / "err").write_text(stderr)
    exe.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat {tmp_path}/out\ncat {tmp_path}/err >&2\n'
                   f"exit {code}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return Talosctl("10.0.1.5", None, endpoint="203.0.113.10", binary=str(exe))


def test_remove_member_sends_the_hex_id_to_the_node_named(tmp_path):
    t = _fake(tmp_path, "", "", 0)
    assert talosctl_etcd.remove_member(t, 0x33) is True
    assert (tmp_path / "argv").read_text().split() == ["--nodes", "10.0.1.5", "--endpoints", "203.0.113.10", "etcd",
                                                       "remove-member", "0000000000000033"]


def test_remove_member_already_gone_is_not_an_error(tmp_path):
    # v1alpha1_server.go:1881-1883: ErrMemberNotFound -> codes.NotFound; talosctl prints the error and exits 1.
    t = _fake(tmp_path, "", "error: 1 error occurred:\n\t* 10.0.1.5: rpc error: code = NotFound desc = "
                            "etcdserver: member not found\n", 1)
    assert talosctl_etcd.remove_member(t, 0x33) is False


def test_remove_member_unreachable_is_classified(tmp_path):
    t = _fake(tmp_path, "", 'error: rpc error: code = Unavailable desc = connection error: desc = "transport: Error '
                            'while dialing: dial tcp 203.0.113.10:50000: connect: connection refused"\n', 1)
    with pytest.raises(NodeUnreachable):
        talosctl_etcd.remove_member(t, 0x33)
