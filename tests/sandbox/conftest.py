from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.api import Sandbox
from sandbox.testing import require_etcd, sandbox, sandbox_factory  # noqa: F401  (pytest fixtures)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[Sandbox]:
    """One node-only sandbox for the tests that leave its state as they found it."""
    require_etcd()
    sb = Sandbox.up(tmp_path_factory.mktemp("shared") / "sb", reboot_seconds=0.3, bootstrap_not_ready_seconds=0.2,
                    with_s3=False)
    yield sb
    sb.down()


@pytest.fixture(autouse=True)
def _no_faults_left(request):
    yield
    if "shared" in request.fixturenames:
        request.getfixturevalue("shared").clear_faults()
