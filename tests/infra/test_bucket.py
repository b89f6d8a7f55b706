"""The backup bucket as a vault, under Pulumi mocks and as pure policy documents: tiered lifecycle, write-once
snapshots, a `latest` that is only ever a copy of a snapshot, tier tags that stay, named readers, Object Lock."""

from __future__ import annotations

import fnmatch
import json

import pytest

from dr.core import tiers
from infra.bucket import CREDENTIAL_KEY, bucket_policy, lifecycle_rules
from tests.infra.mocks import DEPLOYER_ROLE, run_program, stack_file_config
from tests.infra.policy_eval import denied_by

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARN = "arn:aws:s3:::b"
LAMBDA = "arn:aws:iam::123456789012:role/talos-dr-lambda-role"
OTHER = "arn:aws:iam::123456789012:role/ReadOnly"


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_file_config())


@pytest.fixture(scope="module")
def locked():
    return run_program({**stack_file_config(), "talos-dr:snapshotObjectLockDays": "30"})


# --- lifecycle ----------------------------------------------------------------------------------------------------

def test_each_tier_expires_after_its_own_days_and_nothing_else_expires_current_objects():
    rules = {r["id"]: r for r in lifecycle_rules("snapshots/", {"hourly": 2, "daily": 14, "weekly": 56, "monthly": 365})}
    for tier, days in (("hourly", 2), ("daily", 14), ("weekly", 56), ("monthly", 365)):
        rule = rules[f"expire-{tier}-snapshots"]
        assert rule["filter"] == {"and_": {"prefix": "snapshots/", "tags": {"retention": tier}}}
        assert rule["expiration"] == {"days": days}
        assert rule["noncurrent_version_expiration"]["noncurrent_days"] >= 1
    expiring = [r for r in rules.values() if "days" in r.get("expiration", {})]
    assert len(expiring) == 4 and all(r["filter"]["and_"]["tags"]["retention"] in tiers.TIERS for r in expiring)
    assert not [r for r in rules.values() if "latest" in json.dumps(r.get("filter")) and "expiration" in r]
    assert rules["expire-old-latest-copies"] == {"id": "expire-old-latest-copies", "status": "Enabled",
                                                 "filter": {"prefix": "snapshots/latest"},
                                                 "noncurrent_version_expiration": {"noncurrent_days": 1}}
    assert rules["remove-expired-delete-markers"]["expiration"] == {"expired_object_delete_marker": True}


def test_tier_days_must_increase():
    with pytest.raises(ValueError, match="daily"):
        lifecycle_rules("snapshots/", {"hourly": 14, "daily": 14, "weekly": 56, "monthly": 365})


def test_the_stack_wires_the_configured_days(prod):
    run = run_program({**stack_file_config(), "talos-dr:snapshotRetentionMonthlyDays": "730"})
    rules = {r["id"]: r for r in run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]}
    assert rules["expire-monthly-snapshots"]["expiration"]["days"] == 730
    assert rules["expire-hourly-snapshots"]["filter"] == {"and": {"prefix": "snapshots/", "tags": {"retention": "hourly"}}}
    lifecycle = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    assert run.urn("talos-dr-etcd-backups-versioning") in run.options(lifecycle.name)["dependencies"]


# --- the policy, as a document ------------------------------------------------------------------------------------
# The evaluator (tests/infra/policy_eval.py) is a model of IAM's Deny evaluation for the operators this policy uses;
# the tests below state each request the way S3 documents its context keys, and the statements are also asserted
# literally in the mocks tests.

POLICY = bucket_policy(ARN, "snapshots/", readers=[DEPLOYER_ROLE, LAMBDA], credential_readers=[DEPLOYER_ROLE, LAMBDA])
SNAP = f"{ARN}/snapshots/etcd-snapshot-20261124T020000Z.db.zst"
LATEST = f"{ARN}/snapshots/latest"
TLS = {"aws:SecureTransport": "true", "aws:PrincipalArn": LAMBDA}


@pytest.mark.parametrize("what, action, resource, context, sids", [
    ("a new snapshot with If-None-Match", "s3:PutObject", SNAP,
     {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true"}, []),
    ("an unconditional PutObject: an overwrite", "s3:PutObject", SNAP, {"s3:ObjectCreationOperation": "true"},
     ["SnapshotsAreWriteOnce"]),
    ("CreateMultipartUpload / UploadPart take no header", "s3:PutObject", SNAP, {"s3:ObjectCreationOperation": "false"}, []),
    ("CopyObject onto a snapshot key", "s3:PutObject", SNAP,
     {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "b/snapshots/etcd-snapshot-20261124T010000Z.db"},
     ["SnapshotsAreWriteOnce"]),
    ("latest as a copy of a snapshot", "s3:PutObject", LATEST,
     {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "b/snapshots/etcd-snapshot-20261124T020000Z.db.zst",
      "s3:RequestObjectTag/retention": "latest"}, []),
    ("latest as a copy of a version, leading slash", "s3:PutObject", LATEST,
     {"s3:ObjectCreationOperation": "true", "s3:RequestObjectTag/retention": "latest",
      "s3:x-amz-copy-source": "/b/snapshots/etcd-snapshot-20261124T020000Z.db?versionId=abc"}, []),
    ("latest copied with the source's tags (TaggingDirective COPY): an hourly, gone in 2 days", "s3:PutObject", LATEST,
     {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "b/snapshots/etcd-snapshot-20261124T020000Z.db"},
     ["LatestKeepsItsTier"]),
    ("latest copied and tagged hourly", "s3:PutObject", LATEST,
     {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "b/snapshots/etcd-snapshot-20261124T020000Z.db",
      "s3:RequestObjectTag/retention": "hourly"}, ["LatestKeepsItsTier"]),
    ("latest uploaded, not copied", "s3:PutObject", LATEST, {"s3:ObjectCreationOperation": "true"},
     ["LatestOnlyByCopy", "LatestOnlyFromASnapshot", "LatestKeepsItsTier"]),
    ("latest copied from another bucket", "s3:PutObject", LATEST,
     {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "evil/snapshots/etcd-snapshot-20991231T235959Z.db",
      "s3:RequestObjectTag/retention": "latest"},
     ["LatestOnlyFromASnapshot"]),
    ("latest copied from a non-snapshot key", "s3:PutObject", LATEST,
     {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "b/credentials/etcd-backup.json",
      "s3:RequestObjectTag/retention": "latest"},
     ["LatestOnlyFromASnapshot"]),
    ("an SSE-C write", "s3:PutObject", SNAP,
     {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true",
      "s3:x-amz-server-side-encryption-customer-algorithm": "AES256"}, ["DenySSEC"]),
    ("the first tags of a new snapshot", "s3:PutObjectTagging", SNAP, {"s3:RequestObjectTag/retention": "hourly"}, []),
    ("more tags, the tier kept (set_tags merges)", "s3:PutObjectTagging", SNAP,
     {"s3:ExistingObjectTag/retention": "monthly", "s3:RequestObjectTag/retention": "monthly"}, []),
    ("a monthly re-tagged hourly: a delete in two days", "s3:PutObjectTagging", SNAP,
     {"s3:ExistingObjectTag/retention": "monthly", "s3:RequestObjectTag/retention": "hourly"}, ["TierTagStaysMonthly"]),
    ("a tag set without the tier", "s3:PutObjectTagging", SNAP,
     {"s3:ExistingObjectTag/retention": "daily"}, ["TierTagStaysDaily"]),
    ("latest re-tagged", "s3:PutObjectTagging", LATEST,
     {"s3:ExistingObjectTag/retention": "latest", "s3:RequestObjectTag/retention": "hourly"}, ["TierTagStaysLatest"]),
    ("the tier tag deleted", "s3:DeleteObjectTagging", SNAP, {"s3:ExistingObjectTag/retention": "weekly"},
     ["TierTagsCannotBeRemoved"]),
    ("the Lambda reads a snapshot (HEAD, copy source)", "s3:GetObject", SNAP, {"aws:PrincipalArn": LAMBDA}, []),
    ("ReadOnlyAccess elsewhere in the account", "s3:GetObject", SNAP, {"aws:PrincipalArn": OTHER},
     ["ReadsOnlyByNamedPrincipals"]),
    ("the Lambda reads its credential", "s3:GetObject", f"{ARN}/{CREDENTIAL_KEY}", {"aws:PrincipalArn": LAMBDA}, []),
    ("anyone else reads the credential", "s3:GetObject", f"{ARN}/{CREDENTIAL_KEY}", {"aws:PrincipalArn": OTHER},
     ["ReadsOnlyByNamedPrincipals", "CredentialOnlyForTheLambda"]),
    ("plain HTTP", "s3:GetObject", SNAP, {"aws:SecureTransport": "false"}, ["DenyInsecureTransport"]),
])
def test_policy_table(what, action, resource, context, sids):
    ctx = {**TLS, **context}
    assert denied_by(POLICY, action, resource, ctx) == sids, what


def test_a_talos_backup_name_is_not_a_snapshot_key_but_the_lambda_cannot_write_it_either():
    from infra.schedule_policies import lambda_policy

    other = f"{ARN}/snapshots/talos-2099-12-31T23:59:59Z.snap"
    assert denied_by(POLICY, "s3:PutObject", other, {**TLS, "s3:ObjectCreationOperation": "true"}) == []
    allowed = [r for s in json.loads(lambda_policy(ARN, "snapshots/", CREDENTIAL_KEY))["Statement"]
               if "s3:PutObject" in s["Action"] for r in s["Resource"]]
    assert not any(fnmatch.fnmatchcase(other, r) for r in allowed)


def test_no_readers_no_read_restriction():
    sids = {s["Sid"] for s in json.loads(bucket_policy(ARN))["Statement"]}
    assert "ReadsOnlyByNamedPrincipals" not in sids and "CredentialOnlyForTheLambda" not in sids


# --- under mocks --------------------------------------------------------------------------------------------------

def test_policy_and_encryption_in_the_stack(prod):
    bucket = prod.one("aws:s3/bucket:Bucket")
    arn = f"arn:aws:s3:::{bucket.id}"
    policy = prod.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"]
    by_sid = {s["Sid"]: s for s in json.loads(policy)["Statement"]}
    write_once = by_sid["SnapshotsAreWriteOnce"]
    assert write_once["Action"] == ["s3:PutObject"] and write_once["Resource"] == [f"{arn}/snapshots/*etcd-snapshot-*"]
    assert write_once["Condition"] == {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}}
    assert by_sid["LatestOnlyByCopy"]["Resource"] == [f"{arn}/snapshots/latest"]
    assert by_sid["DenySSEC"]["Condition"] == {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in by_sid.values())
    deletes = {s["Sid"] for s in by_sid.values() if "s3:DeleteObjectVersion" in s["Action"]}
    assert deletes == {"NoDeletesButLifecycle", "CredentialDeletedOnlyByTheDeployer", "NoWritesByOthers"}
    sse = prod.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["rules"][0]["blockedEncryptionTypes"] == ["SSE-C"]
    assert "objectLockEnabled" not in bucket.inputs, "setting it would replace the (protected) bucket"


def test_no_object_lock_by_default(prod):
    assert not prod.of_type("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")


def test_object_lock_in_governance_mode_when_asked(locked):
    lock = locked.one("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration")
    assert lock.inputs["bucket"] == locked.one("aws:s3/bucket:Bucket").id
    assert lock.inputs["objectLockEnabled"] == "Enabled"
    assert lock.inputs["rule"] == {"defaultRetention": {"mode": "GOVERNANCE", "days": 30}}
    # Versioning first (S3 refuses Object Lock on an unversioned bucket); the bucket itself is not replaced.
    assert locked.urn("talos-dr-etcd-backups-versioning") in locked.options(lock.name)["dependencies"]
    assert "objectLockEnabled" not in locked.one("aws:s3/bucket:Bucket").inputs


def test_old_credentials_and_kits_expire_but_current_ones_never_do():
    rules = {r["id"]: r for r in lifecycle_rules("snapshots/", tiers.DEFAULT_DAYS)}
    assert rules["expire-old-credentials"] == {"id": "expire-old-credentials", "status": "Enabled",
                                               "filter": {"prefix": "credentials/"},
                                               "noncurrent_version_expiration": {"noncurrent_days": 30}}
    assert rules["expire-old-recovery-kits"]["filter"] == {"prefix": "recovery/"}
    assert "expiration" not in rules["expire-old-recovery-kits"] and "expiration" not in rules["expire-old-credentials"]
