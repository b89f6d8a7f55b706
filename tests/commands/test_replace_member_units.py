"""replace-member's parts that need no node: the question (every node's state, the plan, yes or nothing), the
endpoint each node is dialled at."""

from __future__ import annotations

import io

import pytest

from dr.commands.replace_member import ask, endpoint_for
from dr.core import member_repair as mr
from dr.core.cluster_nodes import ClusterNode
from dr.core.errors import NotConfirmed
from dr.core.node_state import ETCD_FAILED, ETCD_RUNNING, UNREACHABLE, NodeState

N = [ClusterNode(f"cp-{i}", f"10.0.{i}.5", f"203.0.113.{i}", f"i-{i}", "us-east-1a") for i in (1, 2, 3)]
M = tuple(mr.Member(f"{i:016x}", f"ip-10-0-{i}-5", (f"https://10.0.{i}.5:2380",)) for i in (1, 2, 3))
RUN = NodeState(ETCD_RUNNING, "running", "Running")


def _seen(third: NodeState) -> list[mr.Seen]:
    return [mr.Seen(N[0], RUN, M, "OK"), mr.Seen(N[1], RUN, M, "OK"), mr.Seen(N[2], third)]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _ask(step, seen, **kw) -> str:
    out = io.StringIO()
    ask(N[2], step, seen, N[0], out=out, cluster="prod", safety=True, **kw)
    return out.getvalue()


def test_the_question_shows_every_node_and_the_plan():
    step = mr.plan(N[2], _seen(NodeState(UNREACHABLE, "unreachable")), None, mr.Options())
    assert step.action == mr.CONFIRM and step.mode == mr.BY_PULUMI
    text = _ask(step, _seen(NodeState(UNREACHABLE, "unreachable")), yes=True, stdin=io.StringIO())
    assert "About to replace the etcd member of cp-3 (10.0.3.5) in cluster prod" in text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("  cp-")}
    assert "running, etcd Running, health OK" in rows["cp-1"] and "voter" in rows["cp-1"]
    assert "unreachable" in rows["cp-3"] and "(lost)" in rows["cp-3"] and "0000000000000003" in rows["cp-3"]
    assert "1. a safety snapshot of etcd from healthy member cp-1" in text
    assert "2. etcd member 0000000000000003 is removed (asked of cp-1)" in text
    assert "`pulumi up --refresh`" in text and text.rstrip().endswith("confirmed by --yes")


def test_a_node_that_answers_is_reset_not_rebuilt():
    seen = _seen(NodeState(ETCD_FAILED, "running", "Failed", 30, "Failed to run pre stage"))
    step = mr.plan(N[2], seen, None, mr.Options())
    text = _ask(step, seen, yes=True, stdin=io.StringIO())
    assert step.mode == mr.BY_RESET and "--system-labels-to-wipe EPHEMERAL" in text and "pulumi up" not in text


@pytest.mark.parametrize("stdin, words", [
    (io.StringIO("yes\n"), "there is no terminal"),  # not a tty: never read as a yes
    (Tty("y\n"), "you typed 'y', not 'yes'"),
    (Tty(""), "no answer (end of input)"),
])
def test_only_a_typed_yes_goes_on(stdin, words):
    seen = _seen(NodeState(UNREACHABLE, "unreachable"))
    step = mr.plan(N[2], seen, None, mr.Options())
    with pytest.raises(NotConfirmed, match="nothing was changed") as ei:
        _ask(step, seen, yes=False, stdin=stdin)
    assert words in str(ei.value)


def test_typed_yes():
    seen = _seen(NodeState(UNREACHABLE, "unreachable"))
    text = _ask(mr.plan(N[2], seen, None, mr.Options()), seen, yes=False, stdin=Tty("yes\n"))
    assert "Type yes to replace the member:" in text


def test_endpoint_for_takes_the_talosconfigs_port():
    assert endpoint_for(N[1], ("203.0.113.1", "203.0.113.2:50001", "203.0.113.3")) == "203.0.113.2:50001"
    assert endpoint_for(N[1], ()) == "203.0.113.2"
    assert endpoint_for(N[1], ("203.0.113.22",)) == "203.0.113.2"
