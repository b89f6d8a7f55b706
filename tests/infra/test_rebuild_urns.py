"""dr.rebuild imports under the URNs the program registers: after the import, `pulumi up` finds the bucket, the data
volumes and the Talos secrets in state instead of creating new ones. Checked against the program run under mocks."""

from __future__ import annotations

import json

import pytest

from dr.core import recovery_kit as kits
from dr.core.rebuild_plan import VolumeFacts, components, import_file, plan
from tests.infra.mocks import run_program, stack_file_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# The mock monitor puts the root stack into the type chain; the engine leaves it out
# (pulumi/pulumi pkg/resource/deploy/deployment.go: `parent.QualifiedType() != resource.RootStackType`).
MOCK_ROOT = "pulumi:pulumi:Stack$"


def engine_urn(mock_urn: str) -> str:
    return mock_urn.replace(MOCK_ROOT, "", 1)


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_file_config())


def test_imported_urns_are_the_programs(prod):
    volume = prod.one("aws:ebs/volume:Volume")
    bucket = prod.one("aws:s3/bucket:Bucket")
    secrets = prod.one("talos:machine/secrets:Secrets")
    vols = json.loads(stack_file_config()["talos-dr:dataVolumes"])
    kit = kits.Kit(project="talos-dr", stack="prod", cluster_name="talos-dr", region="us-east-1", bucket=bucket.id,
                   secrets_bundle="", data_volumes=tuple({"name": v["name"], "id": volume.id} for v in vols))
    p = plan(kit, bucket=bucket.id, secrets_file="/tmp/secrets.yaml",
             volumes={volume.id: VolumeFacts(volume.id, "available")}, newest_snapshots={})
    wanted = {i.type: i.urn(p.stack, p.project, p.cluster) for i in p.imports}
    assert wanted == {
        "aws:s3/bucket:Bucket": engine_urn(prod.urn(bucket.name)),
        "aws:ebs/volume:Volume": engine_urn(prod.urn(volume.name)),
        "talos:machine/secrets:Secrets": engine_urn(prod.urn(secrets.name)),
    }
    for ref, (typ, name) in components(p.cluster).items():
        assert engine_urn(prod.monitor.components[typ]) == f"urn:pulumi:prod::talos-dr::{typ}::{name}", ref
    # Each imported resource is protected in the program too, so `pulumi up` changes no protect flag.
    for res in (volume, bucket, secrets):
        assert prod.options(res.name)["protect"] is True
    doc = import_file(p)
    assert [r["name"] for r in doc["resources"] if r.get("component")] == ["node", "bucket", "talos"]


def test_the_log_group_import_is_the_programs_and_every_import_names_its_provider_version(prod):
    from dr.core.rebuild_plan import LOG_GROUP_TYPE, PROVIDER_VERSIONS, log_group_name
    from tests.test_requirements_lock import _pins

    group = prod.one(LOG_GROUP_TYPE)
    assert group.inputs["name"] == log_group_name("talos-dr")
    bucket = prod.one("aws:s3/bucket:Bucket")
    kit = kits.Kit(project="talos-dr", stack="prod", cluster_name="talos-dr", region="us-east-1", bucket=bucket.id,
                   secrets_bundle="")
    p = plan(kit, bucket=bucket.id, secrets_file="/tmp/secrets.yaml", volumes={}, newest_snapshots={}, log_group=True)
    (imp,) = [i for i in p.imports if i.type == LOG_GROUP_TYPE]
    assert imp.urn(p.stack, p.project, p.cluster) == engine_urn(prod.urn(group.name))
    assert imp.id == log_group_name("talos-dr")
    doc = import_file(p)
    assert {r["type"]: r["version"] for r in doc["resources"] if not r.get("component")} == {
        "aws:s3/bucket:Bucket": "7.51.1", "talos:machine/secrets:Secrets": "0.8.1", LOG_GROUP_TYPE: "7.51.1"}
    pins = _pins(__import__("pathlib").Path(__file__).resolve().parents[2] / "requirements.txt")
    assert PROVIDER_VERSIONS == {"aws": pins["pulumi-aws"], "talos": pins["pulumiverse-talos"]}
    # unknown: a note with the two commands, no import
    q = plan(kit, bucket=bucket.id, secrets_file="/tmp/s.yaml", volumes={}, newest_snapshots={}, log_group=None)
    assert not [i for i in q.imports if i.type == LOG_GROUP_TYPE]
    assert any("aws logs delete-log-group" in n for n in q.notes)
