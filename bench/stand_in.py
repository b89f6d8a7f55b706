"""Stand-in for ``aws s3 cp`` when awscli is not installed: boto3's ``upload_file`` with its default transfer
settings (what the AWS CLI uses underneath: s3transfer, 8 MiB parts, 10 threads)."""

from __future__ import annotations

import sys

import boto3
from botocore.config import Config


def main() -> int:
    path, bucket, key = sys.argv[1:4]
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    client.upload_file(path, bucket, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
