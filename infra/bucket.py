"""Backup bucket: private, versioned, encrypted, TLS-only, a vault for snapshots, and out of `pulumi destroy`'s reach.

The vault, in one place (AWS documents each rule; the URLs are next to the code that relies on them):

* **Tiers by tag, expiry by lifecycle.** Every snapshot is tagged ``retention=<tier>`` when written
  (``dr.core.tiers``); one lifecycle rule per tier expires it after that tier's days. No rule expires a current
  object without a tier filter, and ``retention=latest`` (the pinned copy at ``<prefix>latest``) matches none, so
  however long backups stop, the newest snapshot stays. Nobody needs ``s3:DeleteObject``.
* **Write once.** New snapshot keys must be written with ``If-None-Match: *``; ``<prefix>latest`` may only be
  written as a server-side copy of a snapshot in this bucket; a tier tag, once set, cannot be changed or removed
  (re-tagging a monthly as hourly would be a delete in two days); SSE-C writes are refused.
* **Named readers.** Objects can be read only by the principals the stack names (the deployer, the snapshot
  Lambda's role, ``snapshotReaders``, ``snapshotWriters``), and the Lambda's credential object only by the Lambda and
  the deployer.
* **Named writers, no deleters.** Under the snapshot prefix only the Lambda's role and ``snapshotWriters`` write, and
  only they and the verifiers tag; the recovery kit and the credential only the deployer writes; nobody deletes a
  snapshot or a kit but lifecycle (and the break-glass ``snapshotDeleter``, unset by default); the bucket's own
  rules (policy, lifecycle, versioning, Object Lock, encryption, public access) only the deployer changes.
  docs/VAULT.md says who is who and why.
* **Immutable if asked.** ``snapshotObjectLockDays`` > 0 turns on S3 Object Lock, governance mode, with that default
  retention.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.core import tiers
from dr.core.naming import PREFIX as SNAPSHOT_NAME_PREFIX
from dr.core.outputs import DEFAULT_SNAPSHOT_PREFIX
from dr.core.recovery_kit import KIT_PREFIX  # where the recovery kit lives (kit_key)

# Multipart uploads a crashed backup left behind cost money and are invisible in listings.
ABORT_INCOMPLETE_UPLOADS_DAYS = 1
# How long an expired snapshot stays recoverable as a noncurrent version (S3 Console "Show versions"). Snapshot keys
# are never overwritten (conditional writes), so a noncurrent version exists only after a tier's expiry (or a manual
# delete) put a delete marker on top: a short grace, then it is gone.
NONCURRENT_GRACE_DAYS = 1
# Where the snapshot Lambda's os:etcd:backup credential lives (infra/schedule.py writes it).
CREDENTIAL_PREFIX = "credentials/"
CREDENTIAL_KEY = f"{CREDENTIAL_PREFIX}etcd-backup.json"
LATEST_NAME = "latest"
OBJECT_LOCK_MODE = "GOVERNANCE"
# Old versions of the Lambda's credential (each a certificate that reads etcd until it ends) and of the recovery kit
# (old settings, secret ones too) are removed this long after a newer one replaced them, so a leaked
# old version stops being useful. The kit keeps a quarter of history: enough for `talos-dr rebuild` to show who wrote what, and to go back.
OLD_CREDENTIAL_DAYS = 30
OLD_KIT_DAYS = 90


@dataclass
class BackupBucketArgs:
    # Retention tier (dr.core.tiers.TIERS) -> days after upload when its snapshots expire.
    tier_days: Mapping[str, int] = field(default_factory=lambda: dict(tiers.DEFAULT_DAYS))
    bucket_name: str | None = None  # None: Pulumi auto-names it from the resource name plus a random suffix
    snapshot_prefix: str = DEFAULT_SNAPSHOT_PREFIX
    object_lock_days: int = 0  # 0: no Object Lock
    # IAM principal ARNs (as aws:PrincipalArn sees them: a role, not its sessions) allowed to read objects at all,
    # and those allowed to read the Lambda's credential. Empty: reads are not restricted by the bucket policy.
    readers: pulumi.Input[Sequence[str]] = ()
    credential_readers: pulumi.Input[Sequence[str]] = ()
    # Who writes, verifies, deletes and configures (``Principals``); empty deployers: those rules are left out.
    deployers: pulumi.Input[Sequence[str]] = ()
    snapshot_writers: pulumi.Input[Sequence[str]] = ()
    verifiers: pulumi.Input[Sequence[str]] = ()
    deleters: Sequence[str] = ()
    tags: Mapping[str, str] = field(default_factory=dict)


def lifecycle_rules(prefix: str, tier_days: Mapping[str, int]) -> list[dict[str, Any]]:
    """The bucket's lifecycle rules (pulumi-aws ``BucketLifecycleConfiguration`` rule dicts). Pure.

    One rule per tier: current versions tagged ``retention=<tier>`` under ``prefix`` expire after the tier's days
    (a delete marker goes on top, the bucket being versioned), and the noncurrent version that leaves goes
    ``NONCURRENT_GRACE_DAYS`` later. The pinned ``<prefix>latest`` is overwritten by every run; its old versions are
    copies of snapshots that still exist under their own keys, so they go after the same grace. Delete markers left
    with no version under them are removed (a rule that cannot carry a tag filter, and does not expire objects:
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_LifecycleExpiration.html, ExpiredObjectDeleteMarker
    "cannot be specified with Days or Date"). Lifecycle days count from the object's creation and are rounded up to
    the next midnight UTC (https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-expire-general-considerations.html).
    """
    problems = tiers.validate_days(tier_days)
    if problems:
        raise ValueError("; ".join(problems))
    rules: list[dict[str, Any]] = [
        {
            "id": f"expire-{tier}-snapshots",
            "status": "Enabled",
            "filter": {"and_": {"prefix": prefix, "tags": {tiers.TAG_KEY: tier}}},
            "expiration": {"days": tier_days[tier]},
            "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_GRACE_DAYS},
        }
        for tier in tiers.TIERS
    ]
    rules += [
        {
            "id": "expire-old-latest-copies",
            "status": "Enabled",
            "filter": {"prefix": f"{prefix}{LATEST_NAME}"},
            "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_GRACE_DAYS},
        },
        {
            "id": "expire-old-credentials",
            "status": "Enabled",
            "filter": {"prefix": CREDENTIAL_PREFIX},
            "noncurrent_version_expiration": {"noncurrent_days": OLD_CREDENTIAL_DAYS},
        },
        {
            "id": "expire-old-recovery-kits",
            "status": "Enabled",
            "filter": {"prefix": KIT_PREFIX},
            "noncurrent_version_expiration": {"noncurrent_days": OLD_KIT_DAYS},
        },
        {
            "id": "remove-expired-delete-markers",
            "status": "Enabled",
            "filter": {"prefix": prefix},
            "expiration": {"expired_object_delete_marker": True},
        },
        {
            "id": "abort-incomplete-multipart-uploads",
            "status": "Enabled",
            "filter": {"prefix": ""},
            "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_INCOMPLETE_UPLOADS_DAYS},
        },
    ]
    return rules


def _deny(sid: str, actions: Sequence[str], resources: Sequence[str], condition: Mapping[str, Any]) -> dict[str, Any]:
    st: dict[str, Any] = {"Sid": sid, "Effect": "Deny", "Principal": "*", "Action": list(actions), "Resource": list(resources)}
    if condition:
        st["Condition"] = dict(condition)
    return st


def _not(principals: Sequence[str]) -> dict[str, Any]:
    """The condition "the caller is none of ``principals``". aws:PrincipalArn is the ARN of the role a session
    belongs to (not the session's), of a user, or of the account root
    (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn);
    ArnNotLike with a list is true when the key matches none of the values, and a Deny with it applies to everyone
    else (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN:
    "Negated matching"; multiple values of one key are ORed). The values are exact ARNs (config validation refuses
    wildcards), so "Like" matches only them."""
    return {"ArnNotLike": {"aws:PrincipalArn": sorted(set(principals))}}


# Object writes that change what an object holds or says, and the actions that change the bucket's own rules.
OBJECT_WRITE_ACTIONS = ("s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectVersionTagging", "s3:DeleteObjectTagging",
                        "s3:DeleteObjectVersionTagging", "s3:PutObjectRetention", "s3:PutObjectLegalHold")
TAG_ACTIONS = ("s3:PutObjectTagging", "s3:PutObjectVersionTagging")
DELETE_ACTIONS = ("s3:DeleteObject", "s3:DeleteObjectVersion")
# Every bucket subresource that decides what the vault keeps, who reads it and how it is encrypted (S3 API
# permissions: https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html). DeleteBucket
# is listed too: the bucket is protected in Pulumi, and only the deployer's `pulumi destroy` path could ever want it.
BUCKET_CONFIG_ACTIONS = ("s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutLifecycleConfiguration",
                         "s3:PutBucketVersioning", "s3:PutBucketObjectLockConfiguration", "s3:PutEncryptionConfiguration",
                         "s3:PutBucketPublicAccessBlock", "s3:PutBucketOwnershipControls", "s3:PutBucketAcl",
                         "s3:PutBucketCORS", "s3:PutBucketWebsite", "s3:PutReplicationConfiguration",
                         "s3:PutBucketNotification", "s3:DeleteBucket")
# Tag keys a verification writes (dr.adapters.s3 / dr.adapters.store); only the named readers may set them.
VERIFIED_TAG_PATTERN = "verified-*"


@dataclass(frozen=True)
class Principals:
    """Who may do what in the vault (aws:PrincipalArn values). Empty ``deployers``: the writer, deleter and
    configuration rules are left out (a policy cannot name nobody; the stack always names the deployer)."""

    deployers: Sequence[str] = ()  # whoever runs `pulumi up` / `refresh` / `destroy` (plus config `deployers`)
    snapshot_writers: Sequence[str] = ()  # the Lambda's role and config `snapshotWriters`
    verifiers: Sequence[str] = ()  # who may record a verification (`talos-dr verify`): deployers + `snapshotReaders`
    deleters: Sequence[str] = ()  # config `snapshotDeleters`: the break-glass role for `talos-dr prune --s3`


def bucket_policy(
    bucket_arn: str,
    prefix: str = DEFAULT_SNAPSHOT_PREFIX,
    readers: Sequence[str] = (),
    credential_readers: Sequence[str] = (),
    who: Principals | None = None,
) -> str:
    """The bucket policy: only Deny statements (access is granted by each principal's IAM policy). Pure.

    ``readers`` / ``credential_readers`` empty: that restriction is left out (a bucket policy cannot name nobody).
    ``who`` names the writers, verifiers, deleters and deployers (docs/VAULT.md): anyone else is denied.
    """
    who = who or Principals()
    bucket = bucket_arn.split(":::", 1)[-1]
    snapshots = f"{bucket_arn}/{prefix}*{SNAPSHOT_NAME_PREFIX}*"  # etcd-snapshot-* and pre-restore-etcd-snapshot-*
    latest = f"{bucket_arn}/{prefix}{LATEST_NAME}"
    under_prefix = f"{bucket_arn}/{prefix}*"  # every key there: ours, `latest`, talos-backup's names, anything
    deployer_keys = [f"{bucket_arn}/{KIT_PREFIX}*", f"{bucket_arn}/{CREDENTIAL_PREFIX}*"]
    statements = [
        _deny("DenyInsecureTransport", ["s3:*"], [bucket_arn, f"{bucket_arn}/*"], {"Bool": {"aws:SecureTransport": "false"}}),
        # Conditional writes, enforced: a PutObject or CompleteMultipartUpload without If-None-Match is refused, so
        # nothing overwrites a snapshot (an overwrite is a delete once the old version expires). CreateMultipartUpload
        # and UploadPart take no conditional header and are exempt through s3:ObjectCreationOperation
        # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes-enforce.html). A CopyObject onto
        # a snapshot key is refused too: that page notes copies into an enforced prefix fail.
        _deny("SnapshotsAreWriteOnce", ["s3:PutObject"], [snapshots],
              {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}}),
        # `latest` is rewritten by every run, so it cannot be write-once; instead it may only ever be a server-side
        # copy of a snapshot in this bucket: x-amz-copy-source is "<bucket>/<key>[?versionId=...]", sometimes with a
        # leading slash (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html; the condition key:
        # https://docs.aws.amazon.com/AmazonS3/latest/userguide/amazon-s3-policy-keys.html, "copy source"). A plain
        # upload (or a multipart one: CreateMultipartUpload carries no copy source) to `latest` is refused.
        _deny("LatestOnlyByCopy", ["s3:PutObject"], [latest], {"Null": {"s3:x-amz-copy-source": "true"}}),
        _deny("LatestOnlyFromASnapshot", ["s3:PutObject"], [latest],
              {"StringNotLike": {"s3:x-amz-copy-source": [f"{bucket}/{prefix}*{SNAPSHOT_NAME_PREFIX}*",
                                                          f"/{bucket}/{prefix}*{SNAPSHOT_NAME_PREFIX}*"]}}),
        # The copy must carry its own tier, `latest` (TaggingDirective REPLACE with x-amz-tagging): a copy that keeps
        # the source's tags (TaggingDirective COPY, no x-amz-tagging) or says another tier would let the lifecycle
        # expire the one snapshot that must stay. s3:RequestObjectTag/<key> is the
        # x-amz-tagging of a PutObject, CopyObject included
        # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/tagging-and-policies.html); absent, StringNotEquals
        # is true.
        _deny("LatestKeepsItsTier", ["s3:PutObject"], [latest],
              {"StringNotEquals": {f"s3:RequestObjectTag/{tiers.TAG_KEY}": tiers.LATEST}}),
        # SSE-C is the ransomware pattern (re-encrypt with a key only the attacker has): refuse it outright, besides
        # the encryption configuration's BlockedEncryptionTypes.
        _deny("DenySSEC", ["s3:PutObject"], [f"{bucket_arn}/*"],
              {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}),
        # A tier, once set, stays: dropping the tag or changing it would let (or make) lifecycle delete it early.
        _deny("TierTagsCannotBeRemoved", ["s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"], [f"{bucket_arn}/*"],
              {"Null": {f"s3:ExistingObjectTag/{tiers.TAG_KEY}": "false"}}),
    ]
    for tier in (*tiers.TIERS, tiers.LATEST):
        statements.append(_deny(
            f"TierTagStays{tier.capitalize()}", list(TAG_ACTIONS), [f"{bucket_arn}/*"],
            # A negated operator is true when the request has no such tag: replacing the tag set without it is denied.
            {"StringEquals": {f"s3:ExistingObjectTag/{tiers.TAG_KEY}": tier},
             "StringNotEquals": {f"s3:RequestObjectTag/{tiers.TAG_KEY}": tier}},
        ))
    if readers:
        # Without this any principal in the account with s3:GetObject on * (ReadOnlyAccess) could
        # download every snapshot. aws:PrincipalArn is the role's ARN for its sessions
        # (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-principalarn).
        # Tags and attributes too, since they say what a restore trusts: the SHA-256s, the cluster name, the verifications.
        # Listing stays open to the account (key names, sizes and times only).
        statements.append(_deny("ReadsOnlyByNamedPrincipals", ["s3:GetObject", "s3:GetObjectVersion",
                                                               "s3:GetObjectTagging", "s3:GetObjectVersionTagging",
                                                               "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"],
                                [f"{bucket_arn}/*"], _not(readers)))
    if credential_readers:
        statements.append(_deny("CredentialOnlyForTheLambda", ["s3:GetObject", "s3:GetObjectVersion"],
                                [f"{bucket_arn}/{CREDENTIAL_PREFIX}*"], _not(credential_readers)))
    statements += _writer_statements(bucket_arn, under_prefix, deployer_keys, who)
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, sort_keys=True)


def _writer_statements(bucket_arn: str, under_prefix: str, deployer_keys: list[str], who: Principals) -> list[dict[str, Any]]:
    """Named writers, taggers, deleters and configurers (docs/VAULT.md): whoever can write
    a snapshot must not also be able to delete the others or change the rules that keep them.

    An explicit Deny wins over any Allow in anyone's IAM policy (IAM policy evaluation logic:
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html), so these hold against
    `s3:*` on `*` too. Lifecycle expiry is S3's own action, not a request any principal makes, so no Deny here stops
    it; which is why PutLifecycleConfiguration is the deployer's alone (S3 API reference, DeleteObject: "If you want
    to block users or accounts from removing or deleting objects from your bucket, you must deny them the
    s3:DeleteObject, s3:DeleteObjectVersion, and s3:PutLifeCycleConfiguration actions",
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html)."""
    if not who.deployers:
        return []
    writers = list(who.snapshot_writers)
    taggers = [*writers, *who.verifiers]
    out = []
    if writers:
        # Snapshots, `latest` and anything else under the prefix: written only by the schedule and the named writers
        # (`talos-dr backup --save-to-s3`). A planted object needs one of their credentials.
        out.append(_deny("SnapshotsOnlyByNamedWriters", ["s3:PutObject"], [under_prefix], _not(writers)))
        # Tags there: the writers (a streamed upload records its SHA-256 and size as tags at the end) and the
        # verifiers (`talos-dr verify` records its pass).
        out.append(_deny("SnapshotTagsOnlyByNamedWriters",
                         [a for a in OBJECT_WRITE_ACTIONS if a != "s3:PutObject"], [under_prefix], _not(taggers)))
        # A writer tags its own upload once, while it has no facts yet; after that only a verifier may re-tag (and
        # set_tags keeps every other tag as it is). A writer cannot rewrite the SHA-256 a fetch checks.
        out.append(_deny("WritersTagOnlyOnce", list(TAG_ACTIONS), [under_prefix],
                         {**_not([*who.verifiers, *who.deployers]),
                          "Null": {"s3:ExistingObjectTag/snapshot-sha256": "false"}}))
    # A verification is what `latest-verified` trusts: only the named readers who run `talos-dr verify` may write
    # one (s3:RequestObjectTagKeys is the list of keys in the request's tag set; ForAnyValue: any of them matches).
    out.append(_deny("VerificationsOnlyByReaders", list(TAG_ACTIONS), [under_prefix],
                     {**_not([*who.verifiers, *who.deployers]),
                      "ForAnyValue:StringLike": {"s3:RequestObjectTagKeys": [VERIFIED_TAG_PATTERN]}}))
    # The recovery kit and the Lambda's credential: `pulumi up` writes them, nobody else (a forged kit would hand a
    # rebuild an attacker's PKI and settings; a replaced credential, the Lambda's trust in apid).
    out.append(_deny("KitAndCredentialOnlyByTheDeployer", list(OBJECT_WRITE_ACTIONS), deployer_keys, _not(who.deployers)))
    # No deletes but by lifecycle: snapshots and kits go only when their tier (or version) expires. The one
    # exception is the break-glass `snapshotDeleters` (off by default); the credential object may also be deleted
    # by the deployer (`pulumi destroy` removes it, with every version: it holds a certificate that reads etcd).
    kept = [under_prefix, f"{bucket_arn}/{KIT_PREFIX}*"]
    out.append(_deny("NoDeletesButLifecycle", list(DELETE_ACTIONS), kept, _not(who.deleters) if who.deleters else {}))
    out.append(_deny("CredentialDeletedOnlyByTheDeployer", list(DELETE_ACTIONS), [f"{bucket_arn}/{CREDENTIAL_PREFIX}*"],
                     _not(who.deployers)))
    # Keys outside these prefixes: nobody but the principals named here writes, tags or deletes anywhere.
    out.append(_deny("NoWritesByOthers", [*OBJECT_WRITE_ACTIONS, *DELETE_ACTIONS], [f"{bucket_arn}/*"],
                     _not([*who.deployers, *writers, *who.verifiers, *who.deleters])))
    # The bucket's own rules: policy, lifecycle, versioning, Object Lock, encryption, public access. Only the deployer.
    # The account's root user can still get, replace or delete a bucket policy that locks everyone else out (S3 API
    # reference, DeleteBucketPolicy: "the root principal in a bucket owner's Amazon Web Services account can perform
    # the GetBucketPolicy, PutBucketPolicy, and DeleteBucketPolicy API actions, even if their bucket policy explicitly
    # denies the root principal's access", https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteBucketPolicy.html).
    out.append(_deny("BucketRulesOnlyByTheDeployer", list(BUCKET_CONFIG_ACTIONS), [bucket_arn], _not(who.deployers)))
    return out


class BackupBucket(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    policy: aws.s3.BucketPolicy  # what a writer of the credential object waits for

    def __init__(self, name: str, args: BackupBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:bucket:BackupBucket", name, None, opts)
        # The bucket's rules stay on it when `pulumi destroy --exclude-protected` removes them from the state: the
        # vault keeps holding (policy, versioning, lifecycle, encryption, public access, Object Lock) after the stack
        # is gone. Deleting them would suspend versioning and drop the Deny statements on a bucket full of backups.
        child = pulumi.ResourceOptions(parent=self, retain_on_delete=True)
        rules = lifecycle_rules(args.snapshot_prefix, args.tier_days)  # validates before anything is created

        bucket = aws.s3.Bucket(
            f"{name}",
            bucket=args.bucket_name,
            force_destroy=False,  # never delete a bucket that still holds backups
            tags=dict(args.tags),
            # object_lock_enabled is left unset on purpose: it forces a new bucket (a protected one, so the preview
            # would fail), and BucketObjectLockConfiguration below enables Object Lock on new and existing buckets.
            # The backups are the point of this stack: `pulumi destroy` stops here (see README, "Clean up").
            opts=pulumi.ResourceOptions(parent=self, protect=True),
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},  # ACLs off: access is by policy alone
            opts=child,
        )
        public_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},  # an overwritten or deleted snapshot stays recoverable
            opts=child,
        )
        # SSE-S3 (AES256), not SSE-KMS: the DR bucket must stay readable when everything else is gone. With a KMS
        # key, a scheduled key deletion, a key policy mistake or a lost kms:Decrypt grant makes every backup
        # unreadable, and the restore path gains a second service that can fail. The snapshots' Kubernetes Secrets
        # are already encrypted by Talos (secretbox key in the PKI bundle); access control is the policy below.
        # BlockedEncryptionTypes SSE-C: S3 itself refuses customer-key uploads (pulumi-aws 7.51 docs: "Valid values
        # are SSE-C ... and NONE"; https://docs.aws.amazon.com/AmazonS3/latest/API/API_ServerSideEncryptionRule.html).
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-sse",
            bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"},
                    "blocked_encryption_types": ["SSE-C"]}],
            opts=child,
        )
        self.policy = aws.s3.BucketPolicy(
            f"{name}-tls-only",  # the name of its first statement, kept so existing stacks update it in place
            bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, args.readers, args.credential_readers, args.deployers,
                                     args.snapshot_writers, args.verifiers).apply(
                lambda a: bucket_policy(a[0], args.snapshot_prefix, a[1] or (), a[2] or (),
                                        Principals(deployers=a[3] or (), snapshot_writers=a[4] or (),
                                                   verifiers=a[5] or (), deleters=tuple(args.deleters)))
            ),
            # S3 refuses policies while the public access block is being changed; order them.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, depends_on=[public_block]),
        )
        if args.object_lock_days:
            # Governance mode: only a principal with s3:BypassGovernanceRetention (and the header) can delete or
            # shorten a locked version early; compliance mode would bind the root user too, with no way back.
            # Enabling it needs versioning first, and it can never be turned off again, nor versioning suspended
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-configure.html). Lifecycle still
            # puts delete markers on locked objects; it removes a locked version only once its retention has passed
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html, lifecycle section).
            aws.s3.BucketObjectLockConfiguration(
                f"{name}-object-lock",
                bucket=bucket.id,
                object_lock_enabled="Enabled",
                rule={"default_retention": {"mode": OBJECT_LOCK_MODE, "days": args.object_lock_days}},
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, depends_on=[versioning]),
            )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=rules,  # type: ignore[arg-type]  # plain dicts of the RuleArgsDict shape, built by a pure function
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, depends_on=[versioning]),
        )

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn})
