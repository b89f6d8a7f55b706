"""Thin CloudWatch Logs adapter: whether a log group exists (dr.rebuild imports the snapshot Lambda's fixed-name
group instead of letting `pulumi up` fail on it)."""

from __future__ import annotations

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError


def log_group_exists(region: str | None, name: str) -> bool | None:
    """True or False, or None when CloudWatch Logs could not be asked (no rights, no network): the caller says so."""
    try:
        client = boto3.client("logs", region_name=region or None, config=Config(
            connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"}))
        for page in client.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=name):
            if any(g.get("logGroupName") == name for g in page.get("logGroups") or []):
                return True
    except (ClientError, BotoCoreError, NoCredentialsError):
        return None
    return False
