"""sandbox/CONFORMANCE.md's test column names tests that exist (talos-fidelity F8), and the sandbox's local
addresses follow what AWS really does (F9)."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox.layout import Info, Paths
from sandbox.node import Node

ROOT = Path(__file__).resolve().parents[2]


def _test_cells() -> list[str]:
    rows = [ln for ln in (ROOT / "sandbox/CONFORMANCE.md").read_text().splitlines()
            if ln.startswith("| ") and not ln.startswith(("| behaviour", "| ---"))]
    assert len(rows) > 30
    return [row.rstrip().rstrip("|").rsplit(" | ", 1)[-1] for row in rows]


def test_every_test_the_table_names_exists():
    every = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    missing = []
    for cell in _test_cells():
        for ref in re.findall(r"`([^`]+)`", cell):
            path, _, name = ref.partition("::")
            if path.startswith("tests/"):
                f = ROOT / path
                if not f.is_file():
                    missing.append(ref)
                elif name and f"def {name}(" not in f.read_text():
                    missing.append(ref)
            elif re.fullmatch(r"test_\w+", ref) and f"def {ref}(" not in every:
                missing.append(ref)
            elif re.fullmatch(r"test_\w+\.py::test_\w+", ref):
                file, name = ref.split("::")
                hits = list((ROOT / "tests").rglob(file))
                if not hits or not any(f"def {name}(" in h.read_text() for h in hits):
                    missing.append(ref)
    assert missing == []


def test_no_uncitable_upstream_issue():
    for p in [ROOT / "sandbox/CONFORMANCE.md", *(ROOT / "tests/golden").rglob("*"), *(ROOT / "sandbox").glob("*.py")]:
        if p.is_file():
            assert "#14212" not in p.read_text(), p


def test_local_addresses_follow_aws(tmp_path):
    """NodeAddress `current` holds the Elastic IP on AWS (platform/aws/aws.go:234-238, node_address.go:165-168);
    etcd advertises `routed` only, which excludes it."""
    paths = Paths(tmp_path)
    Info(dir=str(tmp_path), cluster_name="c", private_ip="10.0.1.10", public_ip="198.51.100.7").save(paths)
    node = Node(tmp_path)
    assert node.local_addresses() == ("10.0.1.10", "198.51.100.7")
    assert node.routed_addresses() == ("10.0.1.10",)
