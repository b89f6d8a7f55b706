"""Peak memory of an upload must not grow with the snapshot, and should stay under 100 MiB (bench/RESULTS.md
measures it). What bounds it is the transfer configuration, checked here without timing anything."""

from __future__ import annotations

from dr.adapters import s3


def test_parts_in_flight_are_bounded():
    assert s3.TRANSFER.multipart_chunksize == s3.PART_SIZE
    assert s3.TRANSFER.max_concurrency <= 4


def test_buffered_upload_parts_match_the_documented_bound():
    buffered = s3.TRANSFER.max_in_memory_upload_chunks * s3.TRANSFER.multipart_chunksize
    assert buffered <= s3.PART_SIZE * (s3.TRANSFER.max_concurrency + 2)
