"""The recovery kit under Pulumi mocks: an age file under recovery/ in the backup bucket, encrypted to ageRecipients,
holding the secrets bundle in talosctl's YAML, the stack's settings and the outputs a rebuild needs. The round trip is
checked with the real `age` and `age-keygen` CLIs (Debian's age 1.1)."""

from __future__ import annotations

import base64
import json
import subprocess

import pulumi
import pytest
import yaml
from pyrage import x25519

from dr.core import outputs as out
from dr.core import recovery_kit as kit
from tests.docs.markdown import section
from tests.infra.mocks import OS_CA_B64, run_program, stack_file_config
from tests.infra.test_stack import is_secret_input, unwrap
from tests.support.tools import ROOT, require_binary

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

KIT_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
# The top-level layout of `talosctl gen secrets` (talos v1.13.9 pkg/machinery/config/generate/secrets/testdata/
# secrets.yaml; the mocked provider's secrets fill only part of it).
TALOSCTL_SECTIONS = ["cluster", "secrets", "trustdinfo", "certs"]


@pytest.fixture(scope="module")
def identity():
    return x25519.Identity.generate()


def kit_config(identity, **extra):
    return {**stack_file_config(), "talos-dr:ageRecipients": json.dumps([str(identity.to_public())]),
            "talos-dr:kubernetesSecrets": json.dumps({"argocd/repo-creds": {"password": "hunter2"}}), **extra}


@pytest.fixture(scope="module")
def with_kit(identity):
    return run_program(kit_config(identity), secret_keys=["talos-dr:kubernetesSecrets"])


def kit_objects(run):
    return [o for o in run.of_type(KIT_OBJECT) if str(o.inputs.get("key", "")).startswith(kit.KIT_PREFIX)]


def the_kit(run):
    (obj,) = kit_objects(run)
    return obj, base64.b64decode(unwrap(obj.inputs["contentBase64"]))


def test_kit_is_an_age_file_under_recovery_in_the_backup_bucket(with_kit):
    obj, ciphertext = the_kit(with_kit)
    bucket = with_kit.one("aws:s3/bucket:Bucket")
    assert obj.inputs["bucket"] == bucket.id
    assert obj.inputs["key"] == "recovery/talos-dr.kit.age" == kit.kit_key("talos-dr")
    assert ciphertext.startswith(b"age-encryption.org/v1\n-> X25519 "), "binary age v1, one X25519 stanza"
    assert is_secret_input(obj.inputs["contentBase64"]), "the kit's content is a Pulumi secret"
    assert "contentBase64" in with_kit.options(obj.name)["additional_secret_outputs"]
    assert with_kit.options(obj.name)["parent"] == with_kit.monitor.components["talos-dr:recovery:RecoveryKit"]


def test_kit_holds_bundle_settings_and_outputs(with_kit, identity):
    _obj, ciphertext = the_kit(with_kit)
    k = kit.unseal(ciphertext, [identity])
    assert (k.project, k.stack, k.cluster_name, k.region) == ("talos-dr", "prod", "talos-dr", "us-east-1")
    assert k.bucket == with_kit.outputs[out.BUCKET]
    bundle = yaml.safe_load(k.secrets_bundle)
    assert list(bundle) == TALOSCTL_SECTIONS
    assert bundle["secrets"] == {"bootstraptoken": "tok", "secretboxencryptionsecret": "sbox"}
    assert bundle["certs"]["os"] == {"crt": OS_CA_B64["cert"], "key": OS_CA_B64["key"]}
    assert k.config["aws:region"] == "us-east-1" and k.config["talos-dr:clusterName"] == "talos-dr"
    assert json.loads(k.config["talos-dr:dataVolumes"])[0]["name"] == "data"
    assert "talos-dr:kubernetesSecrets" not in k.config, "secret settings are kept apart"
    assert json.loads(k.secret_config["talos-dr:kubernetesSecrets"]) == {"argocd/repo-creds": {"password": "hunter2"}}
    assert set(k.outputs) == set(kit.KIT_OUTPUTS)
    assert not set(k.outputs) & set(out.SECRET_OUTPUTS)
    volume = with_kit.one("aws:ebs/volume:Volume")
    assert [dict(v) for v in k.data_volumes] == [{"name": "data", "id": volume.id}]


def test_kit_round_trip_with_the_age_cli(with_kit, tmp_path):
    """A kit pulumi up wrote opens with `age -d` and an `age-keygen` identity; one `age` wrote opens with unseal."""
    age, keygen = require_binary("age"), require_binary("age-keygen")
    key = tmp_path / "key.txt"
    subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run([keygen, "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    run = run_program(kit_config(x25519.Identity.generate(), **{"talos-dr:ageRecipients": json.dumps([public])}),
                      secret_keys=["talos-dr:kubernetesSecrets"])
    _obj, ciphertext = the_kit(run)
    sealed = tmp_path / "talos-dr.kit.age"
    sealed.write_bytes(ciphertext)
    plain = subprocess.run([age, "-d", "-i", str(key), str(sealed)], check=True, capture_output=True).stdout
    doc = json.loads(plain)
    assert doc["format"] == kit.KIT_FORMAT and doc["clusterName"] == "talos-dr"
    assert list(yaml.safe_load(doc["secretsBundle"])) == TALOSCTL_SECTIONS
    # And the other way: age encrypts, dr.core.recovery_kit opens.
    again = subprocess.run([age, "-r", public], input=plain, check=True, capture_output=True).stdout
    from dr.core.age_keys import parse_identities

    assert kit.unseal(again, parse_identities(key.read_text())).cluster_name == "talos-dr"


def test_no_recipients_no_kit_and_one_warning(monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    run = run_program(stack_file_config())
    assert kit_objects(run) == []
    assert "talos-dr:recovery:RecoveryKit" not in run.monitor.components
    kit_warnings = [w for w in warnings if "recovery kit" in w]
    assert len(kit_warnings) == 1 and "ageRecipients" in kit_warnings[0], warnings


def test_readme_and_runbook_describe_both_recoveries():
    # The committed stack has no recipient (it cannot know yours); the docs say what the kit needs (the README's
    # recovery-kit section moved to docs/REFERENCE.md).
    _, kit = section("rebuild")
    assert "recovery/<clusterName>.kit.age" in kit and "talos-dr rebuild --identity" in kit
    runbook = (ROOT / "docs" / "RUNBOOK.md").read_text()
    for needle in ("## Scenario 5: Pulumi state lost", "## Scenario 6: a data volume is lost",
                   "talos-dr rebuild --identity", "talos-dr volumes", "snapshotId",
                   "### What must be kept offsite", "pulumi up --stack prod", "talos-dr restore latest --stack prod"):
        assert needle in runbook, needle
    offsite = runbook.split("### What must be kept offsite", 1)[1].split("\n\n", 2)[1]
    rows = [ln for ln in offsite.splitlines() if ln.startswith("| ") and not ln.startswith(("| what", "| ---"))]
    assert len(rows) == 1 and "age identity" in rows[0], "the only thing kept offsite is the age identity"


# --- pulumi destroy keeps the kit (a lost stack is rebuilt from it) ------------------------------------------------------------

def _destroy_exclude_protected(run) -> tuple[set[str], set[str]]:
    """(names whose cloud object `pulumi destroy --exclude-protected` deletes, names it keeps), from the options the
    mocks recorded. A model of pulumi/pulumi pkg/cmd/pulumi/destroy.go ``separateProtected`` (protected resources
    and everything they transitively depend on stay) plus the engine's retainOnDelete (the resource leaves the state
    without a delete call)."""
    opts = run.monitor.options
    by_urn = {run.urn(name): name for name in opts}
    kept = {name for name, o in opts.items() if o["protect"]}
    todo = list(kept)
    while todo:
        for dep in opts[todo.pop()]["dependencies"]:
            name = by_urn.get(dep)
            if name is not None and name not in kept:
                kept.add(name)
                todo.append(name)
    deleted = {name for name in opts if name not in kept and not opts[name]["retain_on_delete"]}
    return deleted, kept


def test_destroy_exclude_protected_leaves_every_version_of_the_kit(with_kit):
    (obj,) = kit_objects(with_kit)
    opts = with_kit.options(obj.name)
    assert opts["retain_on_delete"] is True
    assert obj.inputs["checksumAlgorithm"] == "SHA256"  # S3 records it at upload; Object Lock wants one
    deleted, _kept = _destroy_exclude_protected(with_kit)
    assert obj.name not in deleted
    # The credential object does go (it holds a certificate that reads etcd); the bucket, with the snapshots, stays.
    assert "talos-dr-credential-object" in deleted
    assert "talos-dr-etcd-backups" not in deleted
    # ... and keeps its rules: versioning is not suspended, the Deny statements and lifecycle stay on it
    for rule in ("tls-only", "versioning", "lifecycle", "sse", "public-access", "ownership"):
        assert f"talos-dr-etcd-backups-{rule}" not in deleted, rule
    # written after the policy that lets only the deployer write it; who wrote it is in its metadata
    assert with_kit.urn("talos-dr-etcd-backups-tls-only") in opts["dependencies"]
    assert obj.inputs["metadata"] == {kit.WRITTEN_BY: "arn:aws:iam::123456789012:role/deployer"}


def test_credential_object_is_deleted_with_the_governance_bypass_only_under_object_lock(with_kit, identity):
    cred = with_kit.mocks.resources["talos-dr-credential-object"]
    assert not cred.inputs.get("forceDestroy")
    locked = run_program({**kit_config(identity), "talos-dr:snapshotObjectLockDays": "7"},
                         secret_keys=["talos-dr:kubernetesSecrets"])
    assert locked.mocks.resources["talos-dr-credential-object"].inputs["forceDestroy"] is True
