"""Who may write, tag, delete and reconfigure the vault (docs/VAULT.md).

A table of principal x request, evaluated against the Deny statements ``bucket_policy`` emits (tests/infra/
policy_eval.py), with every request stated as the flow really sends it: the schedule (the Lambda's role), `talos-dr
backup --save-to-s3` (a ``snapshotWriters`` role), `talos-dr verify` (a reader), `pulumi up` / `refresh` / `destroy`
(the deployer). Then the same statements as the stack wires them, under Pulumi's mocks.
"""

from __future__ import annotations

import json

import pytest

from infra.bucket import BUCKET_CONFIG_ACTIONS, Principals, bucket_policy
from tests.infra.mocks import ACCOUNT_ID, DEPLOYER_ROLE, run_program, stack_file_config
from tests.infra.policy_eval import denied_by

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARN = "arn:aws:s3:::b"
LAMBDA = f"arn:aws:iam::{ACCOUNT_ID}:role/talos-dr-lambda-role"
WRITER = f"arn:aws:iam::{ACCOUNT_ID}:role/dr-operator"  # snapshotWriters: runs `talos-dr backup --save-to-s3`
READER = f"arn:aws:iam::{ACCOUNT_ID}:role/dr-auditor"  # snapshotReaders: runs `talos-dr verify`
DELETER = f"arn:aws:iam::{ACCOUNT_ID}:role/break-glass"  # snapshotDeleter
ADMIN = f"arn:aws:iam::{ACCOUNT_ID}:role/Admin"  # s3:* on *, named nowhere
OTHER_DEPLOYER = f"arn:aws:iam::{ACCOUNT_ID}:role/ci"  # config `deployers`

SNAP = f"{ARN}/snapshots/etcd-snapshot-20261206T020000Z.db.zst.age"
NEW_SNAP = f"{ARN}/snapshots/etcd-snapshot-20261206T030000Z.db.zst.age"
TALOS_BACKUP = f"{ARN}/snapshots/talos-2026-12-06T03:00:00Z.snap.zst.age"
LATEST = f"{ARN}/snapshots/latest"
KIT = f"{ARN}/recovery/talos-dr.kit.age"
CRED = f"{ARN}/credentials/etcd-backup.json"
ELSEWHERE = f"{ARN}/evil/anything"


def policy(deleter: str | None = None) -> str:
    readers = [DEPLOYER_ROLE, OTHER_DEPLOYER, LAMBDA, WRITER, READER]
    who = Principals(deployers=[DEPLOYER_ROLE, OTHER_DEPLOYER], snapshot_writers=[LAMBDA, WRITER],
                     verifiers=[DEPLOYER_ROLE, OTHER_DEPLOYER, READER], deleters=[deleter] if deleter else [])
    return bucket_policy(ARN, "snapshots/", readers=readers, credential_readers=[DEPLOYER_ROLE, OTHER_DEPLOYER, LAMBDA],
                         who=who)


POLICY = policy()


def request(who: str, **context: str | list[str]) -> dict:
    return {"aws:SecureTransport": "true", "aws:PrincipalArn": who, **context}


# What each flow sends (dr/adapters/s3.py ObjectWriter, dr/adapters/store/s3.py put / pin_latest / record_verification,
# pulumi-aws BucketObjectv2 and the bucket's configuration resources).
NEW_OBJECT = {"s3:if-none-match": "*", "s3:ObjectCreationOperation": "true",
              "s3:RequestObjectTag/retention": "hourly", "s3:RequestObjectTagKeys": ["retention"]}
MULTIPART_START = {"s3:ObjectCreationOperation": "false"}  # CreateMultipartUpload / UploadPart
FACTS_AFTER_STREAM = {"s3:ExistingObjectTag/retention": "hourly", "s3:RequestObjectTag/retention": "hourly",
                      "s3:RequestObjectTagKeys": ["retention", "snapshot-sha256", "snapshot-size"]}
PIN_LATEST = {"s3:ObjectCreationOperation": "true", "s3:x-amz-copy-source": "b/snapshots/etcd-snapshot-20261206T030000Z.db.zst.age",
              "s3:RequestObjectTag/retention": "latest", "s3:RequestObjectTagKeys": ["retention"]}
VERIFY_TAGS = {"s3:ExistingObjectTag/retention": "hourly", "s3:ExistingObjectTag/snapshot-sha256": "ab" * 32,
               "s3:RequestObjectTag/retention": "hourly",
               "s3:RequestObjectTagKeys": ["retention", "snapshot-sha256", "snapshot-size", "verified-at",
                                           "verified-keys", "verified-revision", "verified-sha256"]}
KIT_PUT = {"s3:ObjectCreationOperation": "true", "s3:RequestObjectTagKeys": ["talos-dr/cluster", "talos-dr/stack"]}


FLOWS = [
    # the schedule, and `talos-dr backup --save-to-s3` by a snapshotWriters role: each step of a put
    *[(f"{name}: {step}", who, action, res, ctx, [])
      for name, who in (("schedule", LAMBDA), ("backup --save-to-s3", WRITER))
      for step, action, res, ctx in (
          ("a new snapshot", "s3:PutObject", NEW_SNAP, NEW_OBJECT),
          ("a multipart upload starts", "s3:PutObject", NEW_SNAP, MULTIPART_START),
          ("reads it back (HEAD)", "s3:GetObject", NEW_SNAP, {}),
          ("records SHA-256 and size after the stream", "s3:PutObjectTagging", NEW_SNAP, FACTS_AFTER_STREAM),
          ("copies it to latest", "s3:PutObject", LATEST, PIN_LATEST),
          ("reads the copy source", "s3:GetObject", NEW_SNAP, {}),
      )],
    ("schedule: reads its credential", LAMBDA, "s3:GetObject", CRED, {}, []),
    # talos-dr verify by a reader (and by the deployer)
    ("verify: reads the snapshot", READER, "s3:GetObject", SNAP, {}, []),
    ("verify: records its pass", READER, "s3:PutObjectTagging", SNAP, VERIFY_TAGS, []),
    ("verify by the deployer", DEPLOYER_ROLE, "s3:PutObjectTagging", SNAP, VERIFY_TAGS, []),
    # pulumi up: the kit, the credential, the bucket's rules; refresh reads them; destroy removes the credential
    *[(f"pulumi up ({who.rsplit('/', 1)[-1]}): {what}", who, action, res, ctx, [])
      for who in (DEPLOYER_ROLE, OTHER_DEPLOYER)
      for what, action, res, ctx in (
          ("writes the recovery kit", "s3:PutObject", KIT, KIT_PUT),
          ("writes the credential", "s3:PutObject", CRED, KIT_PUT),
          ("updates the kit's tags", "s3:PutObjectTagging", KIT, {"s3:RequestObjectTagKeys": ["talos-dr/cluster"]}),
          ("reads back the kit", "s3:GetObject", KIT, {}),
          *((f"bucket rule {a}", a, ARN, {}) for a in BUCKET_CONFIG_ACTIONS),
      )],
    ("pulumi refresh: reads the kit", DEPLOYER_ROLE, "s3:GetObject", KIT, {}, []),
    ("pulumi refresh: reads the credential", DEPLOYER_ROLE, "s3:GetObject", CRED, {}, []),
    ("pulumi refresh: reads the kit's tags", DEPLOYER_ROLE, "s3:GetObjectTagging", KIT, {}, []),
    ("pulumi refresh: reads the bucket policy", DEPLOYER_ROLE, "s3:GetBucketPolicy", ARN, {}, []),
    ("pulumi destroy: removes every credential version", DEPLOYER_ROLE, "s3:DeleteObjectVersion", CRED, {}, []),
]

REFUSED = [
    # M1: a principal with s3:PutObject and no name here
    ("plant a newest snapshot", ADMIN, "s3:PutObject", NEW_SNAP, NEW_OBJECT,
     ["SnapshotsOnlyByNamedWriters", "NoWritesByOthers"]),
    ("plant a talos-backup name (not write-once)", ADMIN, "s3:PutObject", TALOS_BACKUP,
     {"s3:ObjectCreationOperation": "true"}, ["SnapshotsOnlyByNamedWriters", "NoWritesByOthers"]),
    ("forge the recovery kit", ADMIN, "s3:PutObject", KIT, KIT_PUT, ["KitAndCredentialOnlyByTheDeployer", "NoWritesByOthers"]),
    ("replace the Lambda's credential", ADMIN, "s3:PutObject", CRED, KIT_PUT,
     ["KitAndCredentialOnlyByTheDeployer", "NoWritesByOthers"]),
    ("the Lambda writes a kit", LAMBDA, "s3:PutObject", KIT, KIT_PUT, ["KitAndCredentialOnlyByTheDeployer"]),
    ("a snapshot writer writes a kit", WRITER, "s3:PutObject", KIT, KIT_PUT, ["KitAndCredentialOnlyByTheDeployer"]),
    ("a reader writes a snapshot", READER, "s3:PutObject", NEW_SNAP, NEW_OBJECT, ["SnapshotsOnlyByNamedWriters"]),
    ("the deployer writes a snapshot (not a snapshotWriter)", DEPLOYER_ROLE, "s3:PutObject", NEW_SNAP, NEW_OBJECT,
     ["SnapshotsOnlyByNamedWriters"]),
    ("write elsewhere in the bucket", ADMIN, "s3:PutObject", ELSEWHERE, {}, ["NoWritesByOthers"]),
    # L1: tags restore trusts
    ("retag a snapshot's SHA-256", ADMIN, "s3:PutObjectTagging", SNAP, VERIFY_TAGS,
     ["SnapshotTagsOnlyByNamedWriters", "WritersTagOnlyOnce", "VerificationsOnlyByReaders", "NoWritesByOthers"]),
    ("the Lambda rewrites recorded facts", LAMBDA, "s3:PutObjectTagging", SNAP,
     {**FACTS_AFTER_STREAM, "s3:ExistingObjectTag/snapshot-sha256": "ab" * 32}, ["WritersTagOnlyOnce"]),
    ("the Lambda claims a verification", LAMBDA, "s3:PutObjectTagging", NEW_SNAP,
     {**FACTS_AFTER_STREAM, "s3:RequestObjectTagKeys": ["retention", "verified-at", "verified-sha256"]},
     ["VerificationsOnlyByReaders"]),
    ("a writer removes tags", WRITER, "s3:DeleteObjectTagging", SNAP, {"s3:ExistingObjectTag/retention": "hourly"},
     ["TierTagsCannotBeRemoved"]),
    # M2: deletes, and the bucket's rules
    *[(f"{who.rsplit('/', 1)[-1]} deletes a snapshot ({a})", who, a, SNAP, {}, ["NoDeletesButLifecycle"])
      for who in (LAMBDA, WRITER, READER, DEPLOYER_ROLE) for a in ("s3:DeleteObject", "s3:DeleteObjectVersion")],
    ("an admin deletes a snapshot", ADMIN, "s3:DeleteObjectVersion", SNAP, {}, ["NoDeletesButLifecycle", "NoWritesByOthers"]),
    ("the deployer deletes the recovery kit", DEPLOYER_ROLE, "s3:DeleteObjectVersion", KIT, {}, ["NoDeletesButLifecycle"]),
    ("the deployer deletes latest", DEPLOYER_ROLE, "s3:DeleteObject", LATEST, {}, ["NoDeletesButLifecycle"]),
    ("an admin deletes the credential", ADMIN, "s3:DeleteObject", CRED, {},
     ["CredentialDeletedOnlyByTheDeployer", "NoWritesByOthers"]),
    *[(f"an admin changes {a}", ADMIN, a, ARN, {}, ["BucketRulesOnlyByTheDeployer"]) for a in BUCKET_CONFIG_ACTIONS],
    ("the Lambda shortens the lifecycle", LAMBDA, "s3:PutLifecycleConfiguration", ARN, {}, ["BucketRulesOnlyByTheDeployer"]),
    ("a writer suspends versioning", WRITER, "s3:PutBucketVersioning", ARN, {}, ["BucketRulesOnlyByTheDeployer"]),
    ("an admin shortens an object's retention", ADMIN, "s3:PutObjectRetention", SNAP, {},
     ["SnapshotTagsOnlyByNamedWriters", "NoWritesByOthers"]),
]


@pytest.mark.parametrize("what, who, action, resource, context, sids", FLOWS + REFUSED, ids=[f[0] for f in FLOWS + REFUSED])
def test_who_may_do_what(what, who, action, resource, context, sids):
    assert denied_by(POLICY, action, resource, request(who, **context)) == sids, what


def test_no_deletes_at_all_without_a_break_glass_role():
    st = {s["Sid"]: s for s in json.loads(POLICY)["Statement"]}["NoDeletesButLifecycle"]
    assert "Condition" not in st and st["Resource"] == [f"{ARN}/snapshots/*", f"{ARN}/recovery/*"]


def test_the_break_glass_role_may_delete_snapshots_and_nobody_else_may():
    glass = policy(DELETER)
    for key in (SNAP, LATEST, KIT):
        assert denied_by(glass, "s3:DeleteObject", key, request(DELETER)) == []
        assert denied_by(glass, "s3:DeleteObjectVersion", key, request(DELETER)) == []
        assert denied_by(glass, "s3:DeleteObject", key, request(DEPLOYER_ROLE)) == ["NoDeletesButLifecycle"]
    # ... but it writes nothing and changes no rule
    assert denied_by(glass, "s3:PutObject", NEW_SNAP, request(DELETER, **NEW_OBJECT)) == ["SnapshotsOnlyByNamedWriters"]
    assert denied_by(glass, "s3:PutBucketPolicy", ARN, request(DELETER)) == ["BucketRulesOnlyByTheDeployer"]


def test_plain_http_is_refused_to_everyone():
    assert "DenyInsecureTransport" in denied_by(POLICY, "s3:PutObject", KIT,
                                                {**request(DEPLOYER_ROLE, **KIT_PUT), "aws:SecureTransport": "false"})


# --- as the stack wires it -----------------------------------------------------------------------------------------

def _statements(run) -> dict[str, dict]:
    return {s["Sid"]: s for s in json.loads(run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])["Statement"]}


def test_the_stack_names_its_writers_deployers_and_no_deleter():
    run = run_program({**stack_file_config(), "talos-dr:snapshotWriters": json.dumps([WRITER]),
                       "talos-dr:snapshotReaders": json.dumps([READER]),
                       "talos-dr:deployers": json.dumps([OTHER_DEPLOYER])})
    bucket_arn = f"arn:aws:s3:::{run.one('aws:s3/bucket:Bucket').id}"
    st = _statements(run)
    lambda_role = f"arn:aws:iam::{ACCOUNT_ID}:role/talos-dr-lambda-role"
    names = lambda s: s["Condition"]["ArnNotLike"]["aws:PrincipalArn"]  # noqa: E731
    assert names(st["SnapshotsOnlyByNamedWriters"]) == sorted([lambda_role, WRITER])
    assert st["SnapshotsOnlyByNamedWriters"]["Resource"] == [f"{bucket_arn}/snapshots/*"]
    assert names(st["SnapshotTagsOnlyByNamedWriters"]) == sorted([lambda_role, WRITER, DEPLOYER_ROLE, OTHER_DEPLOYER, READER])
    assert names(st["KitAndCredentialOnlyByTheDeployer"]) == sorted([DEPLOYER_ROLE, OTHER_DEPLOYER])
    assert st["KitAndCredentialOnlyByTheDeployer"]["Resource"] == [f"{bucket_arn}/recovery/*", f"{bucket_arn}/credentials/*"]
    assert names(st["BucketRulesOnlyByTheDeployer"]) == sorted([DEPLOYER_ROLE, OTHER_DEPLOYER])
    assert names(st["VerificationsOnlyByReaders"]) == sorted([DEPLOYER_ROLE, OTHER_DEPLOYER, READER])
    assert "Condition" not in st["NoDeletesButLifecycle"]
    # writers read (the copy to latest reads its source), deployers read
    assert set(names(st["ReadsOnlyByNamedPrincipals"])) == {lambda_role, WRITER, READER, DEPLOYER_ROLE, OTHER_DEPLOYER}
    # The schedule, backup, pulumi up and refresh still work under the policy the stack really emits.
    policy = run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"]
    snap = f"{bucket_arn}/snapshots/etcd-snapshot-20261206T030000Z.db"
    for who in (lambda_role, WRITER):
        assert denied_by(policy, "s3:PutObject", snap, request(who, **NEW_OBJECT)) == []
        assert denied_by(policy, "s3:PutObject", f"{bucket_arn}/snapshots/latest",
                         request(who, **{**PIN_LATEST, "s3:x-amz-copy-source": f"{run.one('aws:s3/bucket:Bucket').id}"
                                                                               "/snapshots/etcd-snapshot-1.db"})) == []
    for who in (DEPLOYER_ROLE, OTHER_DEPLOYER):
        assert denied_by(policy, "s3:PutObject", f"{bucket_arn}/recovery/talos-dr.kit.age", request(who, **KIT_PUT)) == []
        assert denied_by(policy, "s3:PutBucketPolicy", bucket_arn, request(who)) == []
        assert denied_by(policy, "s3:GetObject", f"{bucket_arn}/credentials/etcd-backup.json", request(who)) == []


def test_a_configured_break_glass_role_is_the_only_deleter():
    run = run_program({**stack_file_config(), "talos-dr:snapshotDeleter": DELETER})
    st = _statements(run)
    assert st["NoDeletesButLifecycle"]["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [DELETER]}}
    # it reads what it prunes (tier, source: a HEAD and GetObjectTagging)
    assert DELETER in st["ReadsOnlyByNamedPrincipals"]["Condition"]["ArnNotLike"]["aws:PrincipalArn"]


def test_tags_are_read_only_by_the_named_readers():
    assert denied_by(POLICY, "s3:GetObjectTagging", SNAP, request(ADMIN)) == ["ReadsOnlyByNamedPrincipals"]
    assert denied_by(POLICY, "s3:GetObjectTagging", SNAP, request(LAMBDA)) == []
    assert denied_by(POLICY, "s3:ListBucket", ARN, request(ADMIN)) == []  # listing stays open (names and sizes)


def test_writer_and_deleter_config_is_validated():
    from infra.config import ConfigValidationError, validate_config

    base = {"aws:region": "us-east-1", "adminCidrs": '["203.0.113.0/24"]'}
    with pytest.raises(ConfigValidationError, match="snapshotWriters"):
        validate_config({**base, "snapshotWriters": '["arn:aws:sts::123456789012:assumed-role/ops/alice"]'})
    with pytest.raises(ConfigValidationError, match="snapshotDeleter"):
        validate_config({**base, "snapshotDeleter": "arn:aws:iam::123456789012:role/*"})
    with pytest.raises(ConfigValidationError, match="deployers"):
        validate_config({**base, "deployers": '["ops"]'})
    cfg = validate_config({**base, "snapshotDeleter": DELETER, "snapshotWriters": json.dumps([WRITER])})
    assert cfg.snapshot_deleter == DELETER and cfg.snapshot_writers == (WRITER,)
    assert validate_config(base).snapshot_deleter is None
