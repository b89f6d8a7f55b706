"""The whole program under Pulumi mocks, with the committed Pulumi.prod.yaml: assertions on the resource graph."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pulumi
import pytest

from dr.core import outputs as out
from infra.config import ConfigValidationError
from tests.infra.mocks import (
    AMI_ID,
    OS_CA_B64,
    PRIVATE_IP,
    PUBLIC_IP,
    ROOT,
    Mocks,
    run_program,
    stack_file_config,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi.runtime.rpc._special_secret_sig
SIG_KEY = "4dabf18193072939515e22adb298388d"  # pulumi.runtime.rpc._special_sig_key
TALOS_DIR = Path("/srv/project/.talos")


def is_secret_input(value) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def unwrap(value):
    return value["value"] if is_secret_input(value) else value


@pytest.fixture(scope="module")
def prod():
    return run_program(stack_file_config(), talos_dir=TALOS_DIR)


@pytest.fixture(scope="module")
def prod_config():
    return {k.removeprefix("talos-dr:"): v for k, v in stack_file_config().items()}


# --- node -------------------------------------------------------------------------------------------------------

def test_instance_requires_imdsv2_and_encrypted_root(prod, prod_config):
    inst = prod.one("aws:ec2/instance:Instance")
    assert inst.inputs["metadataOptions"]["httpTokens"] == "required", prod.urn(inst.name)
    assert inst.inputs["metadataOptions"]["httpEndpoint"] == "enabled"
    root = inst.inputs["rootBlockDevice"]
    assert root["encrypted"] is True
    assert root["volumeSize"] == int(prod_config["rootVolumeSize"])
    assert inst.inputs["instanceType"] == prod_config["instanceType"]
    assert inst.inputs["ami"] == AMI_ID
    assert "userData" not in inst.inputs, "the machine config (PKI) must not go into clear-text user data"


def node_security_group(run):
    """The node's group (the snapshot schedule adds groups of its own)."""
    return run.mocks.resources["talos-dr-node-sg"]


def test_instance_in_subnet_with_node_security_group(prod):
    inst = prod.one("aws:ec2/instance:Instance")
    subnet = prod.mocks.resources["talos-dr-public"]
    sg = node_security_group(prod)
    assert inst.inputs["subnetId"] == subnet.id
    assert inst.inputs["vpcSecurityGroupIds"] == [sg.id]


def test_official_talos_ami_lookup(prod, prod_config):
    (args,) = prod.calls("aws:ec2/getAmi:getAmi")
    assert args["owners"] == ["540036508848"]
    assert args["mostRecent"] is True
    regex = re.compile(args["nameRegex"])
    version, region = prod_config["talosVersion"], prod_config["aws:region"]
    assert regex.search(f"talos-{version}-{region}-amd64")
    for other in (f"talos-{version}-{region}-arm64", f"talos-{version}0-{region}-amd64",
                  f"evil-talos-{version}-{region}-amd64", f"talos-{version}-{region}-amd64-copy",
                  f"talos-v0.0.1-{region}-amd64", f"talos-{version}-eu-west-1-amd64"):
        assert not regex.search(other), f"AMI regex {regex.pattern} must not match {other}"
    assert {"name": "name", "values": [f"talos-{version}-{region}-amd64"]} in args["filters"]


def test_elastic_ip_is_vpc_and_associated_with_the_instance(prod):
    eip = prod.one("aws:ec2/eip:Eip")
    assoc = prod.one("aws:ec2/eipAssociation:EipAssociation")
    inst = prod.one("aws:ec2/instance:Instance")
    assert eip.inputs["domain"] == "vpc"
    assert assoc.inputs["instanceId"] == inst.id
    assert assoc.inputs["allocationId"] == eip.id
    assert prod.options(assoc.name)["delete_before_replace"] is True


def test_data_volumes_encrypted_protected_and_attached(prod, prod_config):
    wanted = json.loads(prod_config["dataVolumes"])
    volumes = {v.name: v for v in prod.of_type("aws:ebs/volume:Volume")}
    attachments = prod.of_type("aws:ec2/volumeAttachment:VolumeAttachment")
    inst = prod.one("aws:ec2/instance:Instance")
    subnet = prod.mocks.resources["talos-dr-public"]
    assert len(volumes) == len(wanted) == len(attachments) >= 1
    for spec in wanted:
        vol = volumes[f"talos-dr-data-{spec['name']}"]
        assert vol.inputs["encrypted"] is True, prod.urn(vol.name)
        assert vol.inputs["type"] == spec["type"]
        assert vol.inputs["size"] == spec["size"]
        assert vol.inputs["availabilityZone"] == subnet.inputs["availabilityZone"], "volume must be in the node's AZ"
        assert prod.options(vol.name)["protect"] is True, "pulumi destroy must not delete data volumes"
        (att,) = [a for a in attachments if a.inputs["volumeId"] == vol.id]
        assert att.inputs["instanceId"] == inst.id
        assert att.inputs["deviceName"] == spec["device"]
        # A replaced instance gets the volume only after the old attachment is gone (EBS attaches once).
        assert prod.options(att.name)["delete_before_replace"] is True


def test_new_talos_version_does_not_silently_replace_the_node(prod):
    assert "ami" in prod.options("talos-dr-instance")["ignore_changes"]


# --- network ----------------------------------------------------------------------------------------------------

def test_ingress_only_from_admin_cidrs_on_talos_and_kube_ports(prod, prod_config):
    admin = json.loads(prod_config["adminCidrs"])
    sg = node_security_group(prod)
    assert "ingress" not in sg.inputs and "egress" not in sg.inputs, "rules are separate resources"
    rules = [r for r in prod.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if r.inputs["securityGroupId"] == sg.id]
    seen = set()
    for rule in rules:
        if rule.name == "talos-dr-apid-from-lambda":  # the snapshot schedule's, from its own group (no CIDR)
            assert rule.inputs["referencedSecurityGroupId"] == prod.mocks.resources["talos-dr-lambda-sg"].id
            continue
        cidr = rule.inputs.get("cidrIpv4") or rule.inputs.get("cidrIpv6")
        assert cidr not in ("0.0.0.0/0", "::/0"), f"world-open ingress {prod.urn(rule.name)}"
        assert cidr in admin
        assert rule.inputs["securityGroupId"] == sg.id
        assert rule.inputs["ipProtocol"] == "tcp" and rule.inputs["fromPort"] == rule.inputs["toPort"]
        seen.add((int(rule.inputs["fromPort"]), cidr))
    assert seen == {(port, c) for port in (50000, 6443) for c in admin}


def test_world_access_only_when_allowed():
    config = {**stack_file_config(), "talos-dr:adminCidrs": '["0.0.0.0/0"]', "talos-dr:allowWorldAccess": "true"}
    run = run_program(config)
    rules = run.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    cidrs = {r.inputs.get("cidrIpv4") for r in rules if "referencedSecurityGroupId" not in r.inputs}
    assert cidrs == {"0.0.0.0/0"}


def test_vpc_subnet_route_table_wiring(prod, prod_config):
    vpc = prod.one("aws:ec2/vpc:Vpc")
    subnet = prod.mocks.resources["talos-dr-public"]  # the snapshot Lambda has a subnet of its own
    igw = prod.one("aws:ec2/internetGateway:InternetGateway")
    rt = prod.mocks.resources["talos-dr-public-rt"]
    route = prod.one("aws:ec2/route:Route")  # the only route out of the VPC: the node's, through the gateway
    (assoc,) = [a for a in prod.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
                if a.inputs["subnetId"] == subnet.id]
    assert vpc.inputs["cidrBlock"] == prod_config["vpcCidr"]
    assert subnet.inputs["cidrBlock"] == prod_config["subnetCidr"] and subnet.inputs["vpcId"] == vpc.id
    assert route.inputs == {"routeTableId": rt.id, "destinationCidrBlock": "0.0.0.0/0", "gatewayId": igw.id}
    assert assoc.inputs == {"routeTableId": rt.id, "subnetId": subnet.id}
    net = prod.stack.network
    assert net is not None


# --- bucket -----------------------------------------------------------------------------------------------------

def test_bucket_encrypted_private_versioned_and_protected(prod):
    bucket = prod.one("aws:s3/bucket:Bucket")
    assert prod.options(bucket.name)["protect"] is True
    assert bucket.inputs["forceDestroy"] is False
    sse = prod.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["bucket"] == bucket.id
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    pab = prod.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert pab.inputs["bucket"] == bucket.id
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert pab.inputs[flag] is True, flag
    own = prod.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert own.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    ver = prod.one("aws:s3/bucketVersioning:BucketVersioning")
    assert ver.inputs["versioningConfiguration"]["status"] == "Enabled" and ver.inputs["bucket"] == bucket.id


def test_bucket_policy_denies_plain_http(prod):
    bucket = prod.one("aws:s3/bucket:Bucket")
    policy = json.loads(prod.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    (stmt,) = [s for s in policy["Statement"] if s["Sid"] == "DenyInsecureTransport"]
    arn = f"arn:aws:s3:::{bucket.id}"
    assert stmt["Effect"] == "Deny" and stmt["Principal"] == "*" and stmt["Action"] == ["s3:*"]
    assert set(stmt["Resource"]) == {arn, f"{arn}/*"}
    assert stmt["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_lifecycle_expires_snapshots_and_old_versions(prod, prod_config):
    rules = {r["id"]: r for r in prod.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]}
    for tier, key in ("hourly", "Hourly"), ("daily", "Daily"), ("weekly", "Weekly"), ("monthly", "Monthly"):
        snap = rules[f"expire-{tier}-snapshots"]
        assert snap["status"] == "Enabled"
        assert snap["filter"] == {"and": {"prefix": out.DEFAULT_SNAPSHOT_PREFIX, "tags": {"retention": tier}}}
        assert snap["expiration"]["days"] == int(prod_config[f"snapshotRetention{key}Days"])
        assert snap["noncurrentVersionExpiration"]["noncurrentDays"] >= 1
    # No rule expires a current object without a tier tag: `latest` (and anything untagged) stays.
    for rule in rules.values():
        if "days" in (rule.get("expiration") or {}):
            assert rule["filter"]["and"]["tags"]["retention"] in ("hourly", "daily", "weekly", "monthly"), rule["id"]
    abort = rules["abort-incomplete-multipart-uploads"]
    assert abort["status"] == "Enabled" and abort["abortIncompleteMultipartUpload"]["daysAfterInitiation"] >= 1


def test_bucket_name_from_config():
    run = run_program({**stack_file_config(), "talos-dr:bucketName": "acme-etcd-backups"})
    assert run.one("aws:s3/bucket:Bucket").inputs["bucket"] == "acme-etcd-backups"
    assert run.outputs[out.BUCKET] == "acme-etcd-backups"


# --- talos ------------------------------------------------------------------------------------------------------

def test_machine_config_patches(prod, prod_config):
    (args,) = prod.calls("talos:machine/getConfiguration:getConfiguration")
    assert args["machineType"] == "controlplane"
    assert args["clusterEndpoint"] == f"https://{PUBLIC_IP}:6443"
    assert args["talosVersion"] == prod_config["talosVersion"]
    assert args["kubernetesVersion"] == prod_config["kubernetesVersion"]
    assert args["docs"] is False and args["examples"] is False
    import yaml

    docs = [yaml.safe_load(p) for p in args["configPatches"]]
    base = docs[0]
    assert base["machine"]["certSANs"] == [PUBLIC_IP]
    assert base["cluster"]["apiServer"]["certSANs"] == [PUBLIC_IP]
    assert base["machine"]["time"]["servers"] == ["169.254.169.123"]
    assert base["cluster"]["allowSchedulingOnControlPlanes"] is True
    vol = prod.one("aws:ebs/volume:Volume")
    (uv,) = [d for d in docs if d.get("kind") == "UserVolumeConfig"]
    assert uv["name"] == json.loads(prod_config["dataVolumes"])[0]["name"]  # mounted at /var/mnt/<name>
    assert uv["provisioning"]["diskSelector"]["match"] == f'disk.serial == "{vol.id.replace("-", "")}"'


def test_config_applied_then_bootstrapped_after_disks_and_address(prod):
    apply_, boot = "talos-dr-apply", "talos-dr-bootstrap"
    deps = prod.options(apply_)["dependencies"]
    for name in ("talos-dr-eip-assoc", *(a.name for a in prod.of_type("aws:ec2/volumeAttachment:VolumeAttachment"))):
        assert prod.urn(name) in deps, f"{apply_} must wait for {name}"
    assert prod.urn(apply_) in prod.options(boot)["dependencies"]
    assert prod.urn(boot) in prod.options("talos-dr-kubeconfig")["dependencies"]
    applied = prod.mocks.resources[apply_].inputs
    assert applied["onDestroy"]["reset"] is False, "removing a superseded apply must not wipe the new node"
    assert is_secret_input(applied["machineConfigurationInput"])


@pytest.mark.parametrize("name", ["talos-dr-apply", "talos-dr-bootstrap", "talos-dr-kubeconfig"])
def test_talos_calls_target_the_private_ip_through_the_elastic_ip(prod, name):
    # apid forwards a request whose node is not one of its interface addresses (director.go), and the EIP never
    # is: node = private IP, endpoint = EIP, as in siderolabs/contrib examples/terraform/aws/main.tf.
    res = prod.mocks.resources[name]
    assert (res.inputs["node"], res.inputs["endpoint"]) == (PRIVATE_IP, PUBLIC_IP), prod.urn(name)
    inst = prod.one("aws:ec2/instance:Instance")
    assert PRIVATE_IP != PUBLIC_IP and inst.id  # the mock gives the two addresses distinct values


def test_talosconfig_dials_the_elastic_ip_and_targets_the_private_ip(prod):
    (args,) = prod.calls("talos:client/getConfiguration:getConfiguration")
    assert args["endpoints"] == [PUBLIC_IP]
    assert args["nodes"] == [PRIVATE_IP]
    assert prod.outputs[out.NODE_PRIVATE_IP] == PRIVATE_IP and prod.outputs[out.NODE_PUBLIC_IP] == PUBLIC_IP


def test_kubeconfig_client_configuration_is_a_secret_output(prod):
    # Security review I2: the nested client_key must not rely on the bridge's Sensitive flag alone.
    assert {"kubeconfigRaw", "kubernetesClientConfiguration"} <= set(
        prod.options("talos-dr-kubeconfig")["additional_secret_outputs"])


def test_instance_identity_triggers_apply_and_bootstrap_replacement(prod):
    instance_id = prod.one("aws:ec2/instance:Instance").id
    for name in ("talos-dr-apply", "talos-dr-bootstrap"):
        assert prod.options(name)["replacement_trigger"] == instance_id, name


class ReplacedInstanceMocks(Mocks):
    def new_resource(self, args):
        rid, outs = super().new_resource(args)
        if args.typ == "aws:ec2/instance:Instance":
            rid = "i-0replacement000000"
            self.resources[args.name].id = rid
        return rid, outs


def test_a_new_instance_changes_the_trigger(prod):
    run = run_program(stack_file_config(), mocks=ReplacedInstanceMocks())
    for name in ("talos-dr-apply", "talos-dr-bootstrap"):
        before = prod.options(name)["replacement_trigger"]
        after = run.options(name)["replacement_trigger"]
        assert after == "i-0replacement000000" != before, name
    # ... while the config apply's own inputs are unchanged: only the trigger forces the re-apply.
    assert run.mocks.resources["talos-dr-apply"].inputs == prod.mocks.resources["talos-dr-apply"].inputs


def test_pki_is_protected_and_secret(prod):
    opts = prod.options("talos-dr-secrets")
    assert opts["protect"] is True
    assert {"machineSecrets", "clientConfiguration"} <= set(opts["additional_secret_outputs"])


def test_machine_secrets_output_is_a_talosctl_bundle(prod):
    bundle = json.loads(prod.outputs[out.TALOS_MACHINE_SECRETS])
    assert bundle["secrets"]["bootstraptoken"] == "tok"
    assert bundle["secrets"]["secretboxencryptionsecret"] == "sbox"
    assert bundle["certs"]["os"] == {"crt": OS_CA_B64["cert"], "key": OS_CA_B64["key"]}
    assert bundle["cluster"] == {"id": "cid", "secret": "csecret"}
    assert bundle["trustdinfo"] == {"token": "trustd"}


# --- local files and add-ons ------------------------------------------------------------------------------------

def test_talosconfig_and_kubeconfig_written_locally_as_secrets(prod):
    files = {unwrap(r.inputs["path"]): r for r in prod.dynamic("file")}
    assert set(files) == {str(TALOS_DIR / "talosconfig"), str(TALOS_DIR / "kubeconfig")}
    for path, res in files.items():
        assert is_secret_input(res.inputs["content"]), f"{path} content must be a secret input"
        assert res.inputs.get("__provider"), "the provider is serialized into state"
    assert unwrap(files[str(TALOS_DIR / "talosconfig")].inputs["content"]) == prod.outputs[out.TALOSCONFIG]
    assert unwrap(files[str(TALOS_DIR / "kubeconfig")].inputs["content"]) == prod.outputs[out.KUBECONFIG]


def test_argocd_pinned_after_the_cluster_answers(prod, prod_config):
    rel = prod.one("kubernetes:helm.sh/v3:Release")
    assert rel.inputs["chart"] == "argo-cd"
    assert rel.inputs["version"] == prod_config["argocdChartVersion"]
    assert rel.inputs["repositoryOpts"]["repo"] == "https://argoproj.github.io/argo-helm"
    opts = prod.options(rel.name)
    assert prod.urn("talos-dr-ready") in opts["dependencies"]
    assert opts["provider"].startswith(prod.urn("talos-dr-k8s"))
    provider = prod.one("pulumi:providers:kubernetes")
    assert is_secret_input(provider.inputs["kubeconfig"])
    assert unwrap(provider.inputs["kubeconfig"]) == prod.outputs[out.KUBECONFIG]


def test_kubernetes_secrets_from_secret_config():
    secrets = {"argocd/repo-creds": {"password": "hunter2"}, "apps/db": {"url": "postgres://x"}}
    run = run_program({**stack_file_config(), "talos-dr:kubernetesSecrets": json.dumps(secrets)},
                      secret_keys=["talos-dr:kubernetesSecrets"])
    made = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r
            for r in run.of_type("kubernetes:core/v1:Secret")}
    assert set(made) == {("argocd", "repo-creds"), ("apps", "db")}
    for (ns, name), res in made.items():
        assert is_secret_input(res.inputs["stringData"]), f"{ns}/{name} values must be secrets"
        assert unwrap(res.inputs["stringData"]) == secrets[f"{ns}/{name}"]
        assert prod_dep(run, res.name, f"talos-dr-ns-{ns}")
    namespaces = {r.inputs["metadata"]["name"] for r in run.of_type("kubernetes:core/v1:Namespace")}
    assert namespaces == {"argocd", "apps"}


def prod_dep(run, name: str, dep: str) -> bool:
    return run.urn(dep) in run.options(name)["dependencies"]


def test_plain_text_kubernetes_secrets_fail_the_program():
    config = {**stack_file_config(), "talos-dr:kubernetesSecrets": '{"argocd/x": {"k": "v"}}'}
    with pytest.raises(ConfigValidationError, match="--secret"):
        run_program(config)


# --- program, outputs, components -------------------------------------------------------------------------------

def test_every_output_present_and_secret_ones_secret(prod, prod_config):
    assert set(prod.outputs) == set(out.ALL_OUTPUTS + out.VAULT_OUTPUTS + out.SCHEDULE_OUTPUTS)  # scheduledSnapshots is on in prod
    for key in out.SECRET_OUTPUTS:
        assert prod.secret[key] is True, f"{key} must be a secret output"
        assert prod.outputs[key]
    for key in out.PLAIN_OUTPUTS + out.VAULT_OUTPUTS + out.SCHEDULE_OUTPUTS:
        assert prod.secret[key] is False, f"{key} should be readable without --show-secrets"
    assert prod.outputs[out.SNAPSHOT_PREFIX] == out.DEFAULT_SNAPSHOT_PREFIX
    assert prod.outputs[out.AWS_REGION] == prod_config["aws:region"]
    assert prod.outputs[out.CLUSTER_NAME] == prod_config["clusterName"]
    assert prod.outputs[out.CLUSTER_ENDPOINT] == f"https://{PUBLIC_IP}:6443"
    assert prod.outputs[out.NODE_PUBLIC_IP] == PUBLIC_IP
    assert prod.outputs[out.NODE_PRIVATE_IP] == PRIVATE_IP
    assert prod.outputs[out.NODE_INSTANCE_ID] == prod.one("aws:ec2/instance:Instance").id
    assert prod.outputs[out.TALOS_VERSION] == prod_config["talosVersion"]
    assert prod.outputs[out.BUCKET] == prod.one("aws:s3/bucket:Bucket").id
    assert PUBLIC_IP in prod.outputs[out.CONTROLPLANE_CONFIG], "the exported config is the patched one"


COMPONENTS = {
    "talos-dr:network:Network": ("aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/securityGroup:SecurityGroup"),
    "talos-dr:node:Node": ("aws:ec2/instance:Instance", "aws:ec2/eip:Eip", "aws:ebs/volume:Volume"),
    "talos-dr:bucket:BackupBucket": ("aws:s3/bucket:Bucket", "aws:s3/bucketPolicy:BucketPolicy"),
    "talos-dr:talos:TalosCluster": ("talos:machine/secrets:Secrets", "talos:machine/bootstrap:Bootstrap"),
    "talos-dr:addons:Addons": ("kubernetes:helm.sh/v3:Release", "pulumi:providers:kubernetes"),
    "talos-dr:schedule:SnapshotSchedule": ("aws:lambda/function:Function", "aws:scheduler/schedule:Schedule",
                                           "aws:s3/bucketObjectv2:BucketObjectv2", "aws:ec2/vpcEndpoint:VpcEndpoint",
                                           "aws:iam/role:Role", "aws:ec2/subnet:Subnet", "aws:ec2/securityGroup:SecurityGroup",
                                           "aws:scheduler/scheduleGroup:ScheduleGroup"),
    "talos-dr:volumesnapshots:DataVolumeSnapshots": ("aws:dlm/lifecyclePolicy:LifecyclePolicy", "aws:iam/role:Role"),
}


def test_resources_are_children_of_their_components(prod):
    owners: dict[str, set[str]] = {}  # type -> URNs of the components that create it
    for component, children in COMPONENTS.items():
        for typ in children:
            owners.setdefault(typ, set()).add(prod.monitor.components[component])
    for component, children in COMPONENTS.items():
        comp_urn = prod.monitor.components[component]
        comp_name = comp_urn.rsplit("::", 1)[1]
        for typ in children:
            found = prod.of_type(typ)
            assert any(prod.options(r.name)["parent"] == comp_urn for r in found), f"no {typ} under {component}"
            for res in found:
                assert prod.options(res.name)["parent"] in owners[typ], f"{typ} {res.name} outside {owners[typ]}"
                assert res.name.startswith(f"{comp_name}-") or res.name == comp_name, "children named f'{name}-...'"


def test_main_exports_exactly_the_contract(monkeypatch):
    exported: dict[str, object] = {}
    monkeypatch.setattr(pulumi, "export", lambda k, v: exported.__setitem__(k, v))

    def main():
        runpy.run_path(str(ROOT / "__main__.py"))
        return dict(exported)

    run = run_program(stack_file_config(), entry=main)
    assert list(run.outputs) == list(out.ALL_OUTPUTS + out.VAULT_OUTPUTS + out.SCHEDULE_OUTPUTS)
    assert all(run.secret[k] for k in out.SECRET_OUTPUTS)
    files = [unwrap(r.inputs["path"]) for r in run.dynamic("file")]
    assert sorted(files) == [str(ROOT / ".talos" / "kubeconfig"), str(ROOT / ".talos" / "talosconfig")]


def test_bad_config_fails_the_program_naming_the_key():
    config = {**stack_file_config(), "talos-dr:adminCidrs": '["0.0.0.0/0"]', "talos-dr:snapshotRetentionDays": "-1",
              "talos-dr:adminCidr": '["203.0.113.7/32"]'}
    with pytest.raises(ConfigValidationError) as info:
        run_program(config)
    assert set(info.value.keys) == {"adminCidrs[0]", "snapshotRetentionDays", "adminCidr"}


# --- the first `up` waits for the cluster -----------------------------------------------------------------------

def test_cluster_ready_waits_for_this_clusters_api_and_is_replaced_with_the_instance(prod):
    (ready,) = prod.dynamic("ready")
    assert ready.name == "talos-dr-ready"
    assert is_secret_input(ready.inputs["kubeconfig"]), "the admin kubeconfig must stay a secret in state"
    assert unwrap(ready.inputs["kubeconfig"]) == prod.outputs[out.KUBECONFIG]
    assert ready.inputs["node_identity"] == prod.one("aws:ec2/instance:Instance").id
    assert ready.inputs["timeout_seconds"] > 0 and ready.inputs["__provider"]
    deps = prod.options(ready.name)["dependencies"]
    assert prod.urn("talos-dr-bootstrap") in deps and prod.urn("talos-dr-kubeconfig") in deps
    assert prod.options(ready.name)["parent"] == prod.monitor.components["talos-dr:talos:TalosCluster"]


def test_a_new_instance_changes_what_cluster_ready_waits_for(prod):
    run = run_program(stack_file_config(), mocks=ReplacedInstanceMocks())
    (before,), (after,) = prod.dynamic("ready"), run.dynamic("ready")
    assert after.inputs["node_identity"] == "i-0replacement000000" != before.inputs["node_identity"]


def test_every_kubernetes_resource_waits_for_the_cluster(prod):
    ready = prod.urn("talos-dr-ready")
    k8s = [r for r in prod.mocks.resources.values() if r.typ.startswith("kubernetes:") or r.typ == "pulumi:providers:kubernetes"]
    assert {r.typ for r in k8s} >= {"pulumi:providers:kubernetes", "kubernetes:core/v1:Namespace",
                                    "kubernetes:helm.sh/v3:Release"}
    for res in k8s:
        assert ready in prod.options(res.name)["dependencies"], f"{prod.urn(res.name)} must depend on ClusterReady"


def test_kubernetes_secrets_wait_for_the_cluster_too():
    run = run_program({**stack_file_config(), "talos-dr:kubernetesSecrets": json.dumps({"apps/db": {"url": "x"}})},
                      secret_keys=["talos-dr:kubernetesSecrets"])
    (secret,) = run.of_type("kubernetes:core/v1:Secret")
    assert run.urn("talos-dr-ready") in run.options(secret.name)["dependencies"]


def test_kubernetes_provider_forgets_resources_of_an_unreachable_cluster_on_refresh(prod):
    provider = prod.one("pulumi:providers:kubernetes")
    # pulumi_kubernetes.Provider(delete_unreachable=True) reaches the provider as deleteUnreachable (provider
    # inputs travel as strings), the same switch as PULUMI_K8S_DELETE_UNREACHABLE.
    assert provider.inputs["deleteUnreachable"] == "true"


# --- architecture: Graviton types get the arm64 AMI ---------------------------------------------------------------

@pytest.mark.parametrize("instance_type,arch,ec2_arch", [
    ("t3.medium", "amd64", "x86_64"),
    ("m5.large", "amd64", "x86_64"),
    ("t4g.medium", "arm64", "arm64"),
    ("m7g.large", "arm64", "arm64"),
])
def test_ami_matches_the_instance_types_architecture(instance_type, arch, ec2_arch):
    run = run_program({**stack_file_config(), "talos-dr:instanceType": instance_type})
    assert run.calls("aws:ec2/getInstanceType:getInstanceType") == [{"instanceType": instance_type}]
    (args,) = run.calls("aws:ec2/getAmi:getAmi")
    name = f"talos-v1.13.9-us-east-1-{arch}"  # hack/cloud-image-uploader/aws.go: talos-<tag>-<region>-<arch>
    assert {"name": "name", "values": [name]} in args["filters"]
    assert {"name": "architecture", "values": [ec2_arch]} in args["filters"]
    assert re.fullmatch(args["nameRegex"], name) and args["owners"] == ["540036508848"]
    assert run.one("aws:ec2/instance:Instance").inputs["instanceType"] == instance_type


@pytest.mark.parametrize("supported,arch", [
    (["i386", "x86_64"], "amd64"), (["x86_64"], "amd64"), (["arm64"], "arm64"), (["x86_64", "arm64"], "amd64"),
])
def test_talos_arch_table(supported, arch):
    from infra.node import talos_arch

    assert talos_arch(supported, "x") == arch


@pytest.mark.parametrize("supported", [["arm64_mac"], ["x86_64_mac"], ["i386"], [], None])
def test_talos_arch_refuses_what_talos_has_no_ami_for(supported):
    from infra.node import talos_arch

    with pytest.raises(ValueError, match="mac2.metal runs .*x86_64 and arm64 only"):
        talos_arch(supported, "mac2.metal")


def test_an_instance_type_without_a_talos_ami_fails_the_program():
    with pytest.raises(Exception, match="Talos publishes AMIs for x86_64 and arm64 only"):
        run_program({**stack_file_config(), "talos-dr:instanceType": "mac2.metal"})


# --- the Pulumi CLI must honour replacement_trigger ---------------------------------------------------------------

def _main_entry(monkeypatch):
    exported: dict[str, object] = {}
    monkeypatch.setattr(pulumi, "export", lambda k, v: exported.__setitem__(k, v))

    def main():
        runpy.run_path(str(ROOT / "__main__.py"))
        return dict(exported)

    return main


def test_main_requires_a_cli_that_honours_replacement_trigger(monkeypatch):
    from tests.infra.mocks import RecordingEngine

    engine = RecordingEngine("3.272.0")
    run_program(stack_file_config(), entry=_main_entry(monkeypatch), engine=engine)
    assert engine.required == [">=3.208.0"]  # pulumi CHANGELOG 3.208.0: the engine's replacement_trigger


@pytest.mark.parametrize("cli,words", [
    ("3.207.0", "does not satisfy the version range '>=3.208.0'"),
    (None, "does not support the `RequirePulumiVersion` RPC"),  # CLIs before 3.217.0
])
def test_main_refuses_an_older_cli_before_registering_anything(monkeypatch, cli, words):
    from tests.infra.mocks import Mocks, RecordingEngine

    mocks = Mocks()
    with pytest.raises(pulumi.RunError) as info:
        run_program(stack_file_config(), entry=_main_entry(monkeypatch), engine=RecordingEngine(cli), mocks=mocks)
    assert words in str(info.value) and "needs a Pulumi CLI >=3.208.0" in str(info.value)
    assert "https://www.pulumi.com/docs/install/" in str(info.value)
    assert mocks.resources == {}, "nothing may be registered under a CLI that would drop replacement_trigger"


# --- the node's private IP (issue 21, talos-fidelity F1) ---------------------------------------------------------

def test_the_instance_has_a_fixed_private_ip_and_is_replaced_delete_before_replace(prod):
    inst = prod.one("aws:ec2/instance:Instance")
    # Unset nodePrivateIp: the subnet's 10th address (AWS reserves .0-.3 and the last).
    assert inst.inputs["privateIp"] == "10.0.1.10"
    opts = prod.options("talos-dr-instance")
    # Two instances cannot hold one private IP: the old one goes first.
    assert opts["delete_before_replace"] is True


def test_an_unset_node_private_ip_never_replaces_an_existing_instance(prod):
    """An instance created before the pin has another address: the default must not replace it on the next `up`."""
    assert "privateIp" in prod.options("talos-dr-instance")["ignore_changes"]
    assert "ami" in prod.options("talos-dr-instance")["ignore_changes"]


def test_a_set_node_private_ip_is_honoured_and_changes_replace():
    run = run_program({**stack_file_config(), "talos-dr:nodePrivateIp": "10.0.1.57"})
    inst = run.one("aws:ec2/instance:Instance")
    assert inst.inputs["privateIp"] == "10.0.1.57"
    assert "privateIp" not in run.options("talos-dr-instance")["ignore_changes"]
    assert run.options("talos-dr-instance")["delete_before_replace"] is True


@pytest.mark.parametrize("value, why", [
    ("10.0.2.5", "not in subnetCidr"),
    ("10.0.1.3", "reserved by AWS"),
    ("10.0.1.255", "reserved by AWS"),
    ("10.0.1.0", "reserved by AWS"),
    ("fd00::5", "not in subnetCidr"),
    ("ten", "not an IP address"),
])
def test_a_node_private_ip_outside_the_usable_subnet_is_refused(value, why):
    with pytest.raises(ConfigValidationError) as exc:
        run_program({**stack_file_config(), "talos-dr:nodePrivateIp": value})
    assert "nodePrivateIp" in str(exc.value) and why in str(exc.value)
