"""Peak memory of an upload must not grow with the snapshot, and should stay under 100 MiB (bench/RESULTS.md
measures it). What bounds it is ObjectWriter: at most ``max_in_flight`` parts on the wire and less than one part
buffered, checked here against the real S3 protocol server without timing anything."""

from __future__ import annotations

import os
import threading
import time

import pytest

from dr.adapters import s3

pytestmark = pytest.mark.slow


def test_parts_in_flight_and_buffered_are_bounded(s3_client, bucket, monkeypatch):
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    real = s3_client.upload_part

    def upload_part(**kw):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)  # slow enough that a writer without a bound would queue every part
        try:
            return real(**kw)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(s3_client, "upload_part", upload_part)
    w = s3.ObjectWriter(s3_client, bucket, "snapshots/big.db", {}, max_in_flight=2)
    piece = os.urandom(1 << 20)
    for _ in range(6 * s3.PART_SIZE // len(piece)):
        w.write(piece)
        assert w._buffered < s3.PART_SIZE  # never a whole part waiting in the buffer
        assert len([f for f in w._parts if not f.done()]) <= 2
    w.commit()
    assert state["peak"] <= 2
    assert s3_client.head_object(Bucket=bucket, Key="snapshots/big.db")["ContentLength"] == 6 * s3.PART_SIZE
