"""Config validation: the committed prod config is valid; each bad value fails with its own key and fix."""

from __future__ import annotations

import json

import pytest

from infra.config import (
    ALL_KEYS,
    DEFAULTS,
    PROJECT_KEYS,
    ConfigValidationError,
    DataVolume,
    validate_config,
)
from tests.infra.mocks import stack_file_config

MINIMAL = {"aws:region": "us-east-1", "adminCidrs": '["203.0.113.7/32"]'}


def prod_raw() -> dict[str, str]:
    """Pulumi.prod.yaml as the validator sees it: project keys unprefixed, aws:region as is."""
    return {k.removeprefix("talos-dr:"): v for k, v in stack_file_config().items()}


def test_prod_stack_file_is_valid():
    cfg = validate_config(prod_raw())
    assert cfg.aws_region == "us-east-1"
    assert cfg.admin_cidrs and not set(cfg.admin_cidrs) & {"0.0.0.0/0", "::/0"}
    assert cfg.data_volumes == (DataVolume(name="data", size=20, type="gp3", device="/dev/sdf"),)
    assert cfg.instance_type.startswith("t3.")


def test_prod_stack_file_sets_only_known_keys_and_no_secrets():
    keys = set(prod_raw())
    assert keys <= set(ALL_KEYS)
    assert "kubernetesSecrets" not in keys, "secret values never go in the committed stack file"


def test_defaults_apply_when_unset():
    cfg = validate_config(MINIMAL)
    assert cfg.cluster_name == DEFAULTS["clusterName"]
    assert cfg.availability_zone == "us-east-1a"
    assert cfg.instance_type == "t3.medium"
    assert cfg.snapshot_schedule == "rate(1 hour)"
    assert cfg.scheduled_snapshots is True
    assert cfg.snapshot_lambda_wheel_dir is None, "unset: the package build downloads into its cache"
    assert cfg.allow_world_access is False
    assert cfg.bucket_name is None
    assert cfg.kubernetes_version is None
    assert cfg.data_volumes == ()
    assert cfg.kubernetes_secrets == ()


def test_cli_strings_and_native_values_parse_alike():
    as_strings = validate_config({**MINIMAL, "rootVolumeSize": "40", "scheduledSnapshots": "false",
                                  "dataVolumes": json.dumps([{"name": "db", "size": 5, "device": "/dev/sdg"}])})
    native = validate_config({**MINIMAL, "adminCidrs": ["203.0.113.7/32"], "rootVolumeSize": 40,
                              "scheduledSnapshots": False,
                              "dataVolumes": [{"name": "db", "size": 5, "device": "/dev/sdg"}]})
    assert as_strings == native
    assert native.data_volumes[0].type == "gp3" and native.data_volumes[0].mount_path == "/var/mnt/db"


def test_world_access_needs_explicit_opt_in():
    cfg = validate_config({**MINIMAL, "adminCidrs": '["0.0.0.0/0", "::/0"]', "allowWorldAccess": "true"})
    assert cfg.admin_cidrs == ("0.0.0.0/0", "::/0")


def test_secrets_must_be_stored_as_secrets():
    secrets = {"argocd/repo-creds": {"password": "hunter2"}}
    cfg = validate_config({**MINIMAL, "kubernetesSecrets": json.dumps(secrets)},
                          secret_keys=frozenset({"kubernetesSecrets"}))
    (secret,) = cfg.kubernetes_secrets
    assert (secret.namespace, secret.name, dict(secret.data)) == ("argocd", "repo-creds", {"password": "hunter2"})
    assert "hunter2" not in repr(cfg), "secret values must not show in the config's repr"


# (case, overrides, key the error must name, words of the fix the message must contain)
INVALID = [
    ("no region", {"aws:region": None}, "aws:region", "pulumi config set aws:region"),
    ("bad region", {"aws:region": "moon-1"}, "aws:region", "us-east-1"),
    ("no admin cidrs", {"adminCidrs": None}, "adminCidrs", "pulumi config set --path 'adminCidrs[0]'"),
    ("empty admin cidrs", {"adminCidrs": "[]"}, "adminCidrs", "nobody could reach"),
    ("admin cidrs not a list", {"adminCidrs": '"203.0.113.7/32"'}, "adminCidrs", "must be a list"),
    ("admin cidrs not json", {"adminCidrs": "[203.0.113.7/32"}, "adminCidrs", "not valid JSON"),
    ("world ipv4", {"adminCidrs": '["0.0.0.0/0"]'}, "adminCidrs[0]", "allowWorldAccess"),
    ("world ipv6", {"adminCidrs": '["203.0.113.7/32", "::/0"]'}, "adminCidrs[1]", "allowWorldAccess"),
    ("world with opt-out", {"adminCidrs": '["0.0.0.0/0"]', "allowWorldAccess": "false"}, "adminCidrs[0]",
     "whole internet"),
    ("bad cidr", {"adminCidrs": '["203.0.113.7"]', }, None, None),  # a bare address is a /32: valid
    ("host bits set", {"adminCidrs": '["203.0.113.7/24"]'}, "adminCidrs[0]", "not a CIDR block"),
    ("not an address", {"adminCidrs": '["office"]'}, "adminCidrs[0]", "203.0.113.7/32"),
    ("bad bool", {"allowWorldAccess": "yes"}, "allowWorldAccess", "true or false"),
    ("bad cluster name", {"clusterName": "Talos_DR"}, "clusterName", "lower-case"),
    ("t2 instance", {"instanceType": "t2.medium"}, "instanceType", "t3.medium"),
    ("bad instance type", {"instanceType": "medium"}, "instanceType", "t3.medium"),
    ("bad talos version", {"talosVersion": "1.13.9"}, "talosVersion", "v1.13.9"),
    ("bad kubernetes version", {"kubernetesVersion": "latest"}, "kubernetesVersion", "1.34.1"),
    ("az of other region", {"availabilityZone": "eu-west-1a"}, "availabilityZone", "us-east-1a"),
    ("root too small", {"rootVolumeSize": "5"}, "rootVolumeSize", "20 to 16384"),
    # The AMI's root snapshot is 20 GiB (hack/cloud-image-uploader/aws.go): 19 would fail RunInstances.
    ("root below the AMI snapshot", {"rootVolumeSize": "19"}, "rootVolumeSize", "root snapshot is 20 GiB"),
    ("root at the AMI snapshot", {"rootVolumeSize": "20"}, None, None),
    ("root not a number", {"rootVolumeSize": "big"}, "rootVolumeSize", "whole number"),
    ("volumes not a list", {"dataVolumes": '{"name": "x"}'}, "dataVolumes", "must be a list"),
    ("volume bad name", {"dataVolumes": '[{"name": "My Data", "size": 5, "device": "/dev/sdf"}]'},
     "dataVolumes[0].name", "/var/mnt/<name>"),
    ("volume bad size", {"dataVolumes": '[{"name": "d", "size": 0, "device": "/dev/sdf"}]'},
     "dataVolumes[0].size", "1 to 16384"),
    ("volume bad type", {"dataVolumes": '[{"name": "d", "size": 5, "type": "ssd", "device": "/dev/sdf"}]'},
     "dataVolumes[0].type", "gp3"),
    ("volume root device", {"dataVolumes": '[{"name": "d", "size": 5, "device": "/dev/xvda"}]'},
     "dataVolumes[0].device", "/dev/sdf to /dev/sdp"),
    ("volume unknown field", {"dataVolumes": '[{"name": "d", "size": 5, "device": "/dev/sdf", "iops": 3}]'},
     "dataVolumes[0]", "allowed: name, size, type, device"),
    ("volume duplicate name", {"dataVolumes": '[{"name": "d", "size": 5, "device": "/dev/sdf"},'
                                              ' {"name": "d", "size": 5, "device": "/dev/sdg"}]'},
     "dataVolumes[1].name", "its own name"),
    ("volume duplicate device", {"dataVolumes": '[{"name": "a", "size": 5, "device": "/dev/sdf"},'
                                                ' {"name": "b", "size": 5, "device": "/dev/sdf"}]'},
     "dataVolumes[1].device", "its own device"),
    ("vpc not a cidr", {"vpcCidr": "10.0.0.0"}, "vpcCidr", "/16 to /28"),
    ("vpc too big", {"vpcCidr": "10.0.0.0/8"}, "vpcCidr", "/16 to /28"),
    ("subnet outside vpc", {"subnetCidr": "192.168.1.0/24"}, "subnetCidr", "inside vpcCidr"),
    ("bucket bad name", {"bucketName": "My_Bucket"}, "bucketName", "S3 naming rules"),
    ("bucket ip name", {"bucketName": "192.168.1.1"}, "bucketName", "not an IP address"),
    ("retention zero", {"snapshotRetentionHourlyDays": "0"}, "snapshotRetentionHourlyDays", "1 to 3650"),
    ("tiers not increasing", {"snapshotRetentionWeeklyDays": "14"}, "snapshotRetentionWeeklyDays",
     "each tier must outlive the one before it"),
    ("retired retention key", {"snapshotRetentionDays": "30"}, "snapshotRetentionDays",
     "pulumi config rm snapshotRetentionDays"),
    ("object lock negative", {"snapshotObjectLockDays": "-1"}, "snapshotObjectLockDays", "whole number"),
    ("object lock on", {"snapshotObjectLockDays": "30"}, None, None),
    ("reader a session", {"snapshotReaders": '["arn:aws:sts::123456789012:assumed-role/ops/alice"]'},
     "snapshotReaders", "name its role instead"),
    ("reader not an arn", {"snapshotReaders": '["ops"]'}, "snapshotReaders", "role/dr-operator"),
    ("half the world", {"adminCidrs": '["203.0.113.7/32", "128.0.0.0/1"]'}, "adminCidrs[1]", "allowWorldAccess"),
    ("world in /8s", {"adminCidrs": '["11.0.0.0/8", "12.0.0.0/8"]'}, "adminCidrs", "internet in pieces"),
    ("a /8 is fine", {"adminCidrs": '["11.0.0.0/8"]'}, None, None),
    ("chart unpinned", {"argocdChartVersion": "latest"}, "argocdChartVersion", "9.1.4"),
    ("schedule typo", {"snapshotSchedule": "every hour"}, "snapshotSchedule", "rate(1 hour)"),
    ("schedule bad unit", {"snapshotSchedule": "rate(1 hours)"}, "snapshotSchedule", "rate(30 minutes)"),
    ("scheduled bad bool", {"scheduledSnapshots": "on"}, "scheduledSnapshots", "true or false"),
    ("wheel dir empty", {"snapshotLambdaWheelDir": " "}, "snapshotLambdaWheelDir", "./lambda-wheels"),
    ("wheel dir not a path", {"snapshotLambdaWheelDir": ["a"]}, "snapshotLambdaWheelDir", "or unset it"),
    ("secrets in plain text", {"kubernetesSecrets": '{"argocd/repo": {"password": "x"}}'}, "kubernetesSecrets",
     "--secret"),
    ("secret bad ref", {"kubernetesSecrets": '{"repo": {"password": "x"}}'}, "kubernetesSecrets.repo",
     "'<namespace>/<name>'"),
    ("secret empty", {"kubernetesSecrets": '{"argocd/repo": {}}'}, "kubernetesSecrets.argocd/repo", "non-empty"),
    ("secret non-string value", {"kubernetesSecrets": '{"argocd/repo": {"port": 22}}'},
     "kubernetesSecrets.argocd/repo", "string values"),
    ("typo key", {"adminCidr": '["203.0.113.7/32"]'}, "adminCidr", "did you mean 'adminCidrs'"),
    ("unknown key", {"flavour": "x"}, "flavour", "pulumi config rm flavour"),
]


@pytest.mark.parametrize(("overrides", "key", "fix"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_value_names_key_and_fix(overrides, key, fix):
    raw = {**MINIMAL, **overrides}
    raw = {k: v for k, v in raw.items() if v is not None}
    secret_keys = frozenset() if key == "kubernetesSecrets" else frozenset({"kubernetesSecrets"})
    if key is None:
        validate_config(raw, secret_keys)  # must not raise
        return
    with pytest.raises(ConfigValidationError) as info:
        validate_config(raw, secret_keys)
    err = info.value
    assert err.keys == [key], f"expected exactly one problem, on {key}; got {err.problems}"
    assert fix in str(err), f"message for {key} should say {fix!r}: {err}"
    assert key in str(err)


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigValidationError) as info:
        validate_config({"rootVolumeSize": "1", "snapshotSchedule": "hourly"})
    assert set(info.value.keys) == {"aws:region", "adminCidrs", "rootVolumeSize", "snapshotSchedule"}


def test_wheel_dir_is_kept_as_given():
    """Relative paths stay relative: Pulumi runs the program in the project directory."""
    assert validate_config({**MINIMAL, "snapshotLambdaWheelDir": "./lambda-wheels"}).snapshot_lambda_wheel_dir == \
        "./lambda-wheels"


def test_every_project_key_has_a_default_entry():
    from infra.lambda_package import WHEEL_DIR_CONFIG_KEY  # the key the package build's error messages name

    assert WHEEL_DIR_CONFIG_KEY in DEFAULTS
    assert PROJECT_KEYS == tuple(DEFAULTS)
    assert ALL_KEYS[0] == "aws:region"
