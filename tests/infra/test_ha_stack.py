"""Three control-plane nodes (issue 24) under Pulumi's mocks: zones, subnets, addresses, the load balancer endpoint,
one bootstrap, the talosconfig, the snapshot Lambda's reach, DLM, the `controlPlaneNodes` rules, and the plan of
growing a one-node stack to three (node 0's resources keep their URNs and inputs; what changes is listed)."""

from __future__ import annotations

import json

import pytest
import yaml

from dr.core import outputs as out
from dr.core.cluster_nodes import from_outputs
from dr.core.volume_snapshots import DATA_VOLUME_TAG
from infra.config import ConfigValidationError
from infra.providers.cluster_ready import ClusterReadyProvider
from tests.infra.mocks import LB_DNS_NAME, PRIVATE_IP, PUBLIC_IP, Mocks, public_ip_of, run_program, stack_file_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIG_KEY = "4dabf18193072939515e22adb298388d"  # pulumi.runtime.rpc._special_sig_key
PRIVATE_IPS = ["10.0.1.10", "10.0.2.10", "10.0.3.10"]
PUBLIC_IPS = [public_ip_of("talos-dr-eip"), public_ip_of("talos-dr-cp1-eip"), public_ip_of("talos-dr-cp2-eip")]
ZONES = ["us-east-1a", "us-east-1b", "us-east-1c"]
INSTANCES = ["talos-dr-instance", "talos-dr-cp1-instance", "talos-dr-cp2-instance"]
SUBNETS = ["talos-dr-public", "talos-dr-public-1", "talos-dr-public-2"]
ENDPOINT = f"https://{LB_DNS_NAME}:6443"


def unwrap(value):
    return value["value"] if isinstance(value, dict) and SIG_KEY in value else value


@pytest.fixture(scope="module")
def one():
    return run_program(stack_file_config())


@pytest.fixture(scope="module")
def three():
    return run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3"})


def test_three_nodes_in_three_zones_each_in_its_own_subnet(three):
    assert PUBLIC_IPS[0] == PUBLIC_IP and len(set(PUBLIC_IPS)) == 3
    res = three.mocks.resources
    instances = three.of_type("aws:ec2/instance:Instance")
    assert sorted(i.name for i in instances) == sorted(INSTANCES)
    rt = res["talos-dr-public-rt"]
    for inst, subnet, zone, ip, cidr in zip(INSTANCES, SUBNETS, ZONES, PRIVATE_IPS,
                                            ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"], strict=True):
        assert res[inst].inputs["subnetId"] == res[subnet].id, inst
        assert res[subnet].inputs["availabilityZone"] == zone and res[subnet].inputs["cidrBlock"] == cidr
        assert res[subnet].inputs["mapPublicIpOnLaunch"] is False
        # The subnet's 10th address, pinned: a replaced node keeps its hostname and Kubernetes Node.
        assert res[inst].inputs["privateIp"] == ip
        assert three.options(inst)["delete_before_replace"] is True
        (assoc,) = [a for a in three.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
                    if a.inputs["subnetId"] == res[subnet].id]
        assert assoc.inputs["routeTableId"] == rt.id, f"{subnet} must route through the internet gateway"
    # Node 0 keeps the one-node rule (address given at creation only); the others are pinned outright.
    assert "privateIp" in three.options("talos-dr-instance")["ignore_changes"]
    for inst in INSTANCES[1:]:
        assert "privateIp" not in three.options(inst)["ignore_changes"]
        assert "ami" in three.options(inst)["ignore_changes"]


def test_each_node_has_its_elastic_ip_and_its_own_volumes_in_its_zone(three):
    res = three.mocks.resources
    for i, inst in enumerate(INSTANCES):
        prefix = "talos-dr" if i == 0 else f"talos-dr-cp{i}"
        eip, assoc = res[f"{prefix}-eip"], res[f"{prefix}-eip-assoc"]
        assert assoc.inputs == {"instanceId": res[inst].id, "allocationId": eip.id}
        assert eip.inputs["domain"] == "vpc"
        vol, att = res[f"{prefix}-data-data"], res[f"{prefix}-data-data-attach"]
        assert vol.inputs["availabilityZone"] == ZONES[i] and vol.inputs["encrypted"] is True
        assert three.options(vol.name)["protect"] is True
        assert att.inputs["instanceId"] == res[inst].id and att.inputs["volumeId"] == vol.id
        assert res[inst].inputs["rootBlockDevice"]["encrypted"] is True


def test_the_dlm_policy_covers_every_nodes_data_volumes(three):
    policy = three.one("aws:dlm/lifecyclePolicy:LifecyclePolicy")
    target = policy.inputs["policyDetails"]["targetTags"]
    assert list(target) == [DATA_VOLUME_TAG]
    volumes = three.of_type("aws:ebs/volume:Volume")
    assert len(volumes) == 3
    for vol in volumes:
        assert all(vol.inputs["tags"].get(k) == v for k, v in target.items()), vol.name


def test_the_nodes_reach_each_other_and_nothing_else_is_opened(three, one):
    rules = three.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    sg = three.mocks.resources["talos-dr-node-sg"]
    (self_rule,) = [r for r in rules if r.inputs.get("referencedSecurityGroupId") == sg.id]
    assert self_rule.inputs["securityGroupId"] == sg.id and self_rule.inputs["ipProtocol"] == "-1"
    for inst in INSTANCES:
        assert three.mocks.resources[inst].inputs["vpcSecurityGroupIds"] == [sg.id]
    for rule in rules:
        assert rule.inputs.get("cidrIpv4") not in ("0.0.0.0/0",) and rule.inputs.get("cidrIpv6") != "::/0"
    # One node: no such rule (its inputs stay what they were).
    assert "talos-dr-node-to-node" not in one.mocks.resources


def test_the_kubernetes_endpoint_is_a_network_load_balancer_over_every_node(three):
    res = three.mocks.resources
    lb = three.one("aws:lb/loadBalancer:LoadBalancer")
    assert lb.inputs["loadBalancerType"] == "network" and lb.inputs["internal"] is False
    assert sorted(lb.inputs["subnets"]) == sorted(res[s].id for s in SUBNETS)
    assert lb.inputs["enableCrossZoneLoadBalancing"] is True
    tg = three.one("aws:lb/targetGroup:TargetGroup")
    assert (tg.inputs["port"], tg.inputs["protocol"], tg.inputs["targetType"]) == (6443, "TCP", "ip")
    assert tg.inputs["preserveClientIp"] == "false", "no hairpin: a node may reach the endpoint that leads to itself"
    assert tg.inputs["healthCheck"]["protocol"] == "TCP"
    attachments = three.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")
    assert sorted(a.inputs["targetId"] for a in attachments) == PRIVATE_IPS
    assert all(a.inputs["targetGroupArn"] == tg.id and a.inputs["port"] == 6443 for a in attachments)
    listener = three.one("aws:lb/listener:Listener")
    assert (listener.inputs["port"], listener.inputs["protocol"]) == (6443, "TCP")
    assert listener.inputs["loadBalancerArn"] == lb.id
    assert listener.inputs["defaultActions"] == [{"type": "forward", "targetGroupArn": tg.id}]
    assert three.outputs[out.CLUSTER_ENDPOINT] == ENDPOINT


def test_the_load_balancer_admits_admins_and_the_nodes_and_the_nodes_admit_it(three):
    admin = json.loads(stack_file_config()["talos-dr:adminCidrs"])
    lb_sg = three.mocks.resources["talos-dr-api-lb-sg"]
    node_sg = three.mocks.resources["talos-dr-node-sg"]
    assert three.one("aws:lb/loadBalancer:LoadBalancer").inputs["securityGroups"] == [lb_sg.id]
    rules = three.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    into_lb = {r.inputs.get("cidrIpv4") for r in rules if r.inputs["securityGroupId"] == lb_sg.id}
    assert into_lb == {*admin, *(f"{ip}/32" for ip in PUBLIC_IPS)}
    assert all(r.inputs["fromPort"] == r.inputs["toPort"] == 6443 for r in rules if r.inputs["securityGroupId"] == lb_sg.id)
    (from_lb,) = [r for r in rules if r.inputs.get("referencedSecurityGroupId") == lb_sg.id]
    assert from_lb.inputs["securityGroupId"] == node_sg.id and from_lb.inputs["fromPort"] == 6443


def _configs(run) -> dict[str, dict]:
    """Each getConfiguration call by the Elastic IP in its machine.certSANs: its args and its base patch."""
    found = {}
    for args in run.calls("talos:machine/getConfiguration:getConfiguration"):
        base = yaml.safe_load(args["configPatches"][0])
        (ip,) = base["machine"]["certSANs"]
        found[ip] = {"args": args, "base": base,
                     "volumes": [yaml.safe_load(p) for p in args["configPatches"][1:]]}
    return found


def test_every_machine_is_a_controlplane_with_the_shared_endpoint_in_its_certificates(three):
    configs = _configs(three)
    assert sorted(configs) == sorted(PUBLIC_IPS)
    res = three.mocks.resources
    for i, ip in enumerate(PUBLIC_IPS):
        args, base = configs[ip]["args"], configs[ip]["base"]
        assert args["machineType"] == "controlplane", "never init: an init node cannot take part in a restore"
        assert args["clusterEndpoint"] == ENDPOINT
        assert base["cluster"]["apiServer"]["certSANs"] == [LB_DNS_NAME, *PUBLIC_IPS]
        prefix = "talos-dr" if i == 0 else f"talos-dr-cp{i}"
        (uv,) = configs[ip]["volumes"]
        assert uv["provisioning"]["diskSelector"]["match"] == f'disk.serial == "{res[f"{prefix}-data-data"].id.replace("-", "")}"'


def test_each_node_is_configured_on_its_own_and_only_node_0_is_bootstrapped(three):
    res = three.mocks.resources
    applies = three.of_type("talos:machine/configurationApply:ConfigurationApply")
    assert sorted(a.name for a in applies) == ["talos-dr-apply", "talos-dr-cp1-apply", "talos-dr-cp2-apply"]
    configs = _configs(three)
    for apply in applies:
        node = ["talos-dr-apply", "talos-dr-cp1-apply", "talos-dr-cp2-apply"].index(apply.name)
        assert (apply.inputs["node"], apply.inputs["endpoint"]) == (PRIVATE_IPS[node], PUBLIC_IPS[node])
        assert yaml.safe_load(unwrap(apply.inputs["machineConfigurationInput"]).split("---\n")[1])["machine"][
            "certSANs"] == [PUBLIC_IPS[node]]
        assert configs[PUBLIC_IPS[node]]
        assert three.options(apply.name)["replacement_trigger"] == res[INSTANCES[node]].id
        prefix = "talos-dr" if node == 0 else f"talos-dr-cp{node}"
        assert three.urn(f"{prefix}-eip-assoc") in three.options(apply.name)["dependencies"]
    (boot,) = three.of_type("talos:machine/bootstrap:Bootstrap")
    assert boot.name == "talos-dr-bootstrap"
    assert (boot.inputs["node"], boot.inputs["endpoint"]) == (PRIVATE_IP, PUBLIC_IP)
    assert three.urn("talos-dr-apply") in three.options(boot.name)["dependencies"]
    assert not {three.urn("talos-dr-cp1-apply"), three.urn("talos-dr-cp2-apply")} & set(
        three.options(boot.name)["dependencies"])


def test_the_talosconfig_lists_every_elastic_ip_as_endpoints_and_every_private_ip_as_nodes(three):
    (args,) = three.calls("talos:client/getConfiguration:getConfiguration")
    assert args["endpoints"] == PUBLIC_IPS
    assert args["nodes"] == PRIVATE_IPS


def test_cluster_ready_waits_for_every_member(three):
    (ready,) = three.dynamic("ready")
    members = ready.inputs["members"]
    assert [m["address"] for m in members] == PRIVATE_IPS
    assert [m["server"] for m in members] == [f"https://{ip}:6443" for ip in PUBLIC_IPS]
    assert [m["identity"] for m in members] == [three.mocks.resources[i].id for i in INSTANCES]
    deps = three.options(ready.name)["dependencies"]
    for name in ("talos-dr-bootstrap", "talos-dr-kubeconfig", "talos-dr-cp1-apply", "talos-dr-cp2-apply"):
        assert three.urn(name) in deps, name
    # The kubeconfig it (and the user) gets names the load balancer; the Kubernetes provider keeps Talos's own.
    servers = {c["cluster"]["server"] for c in yaml.safe_load(three.outputs[out.KUBECONFIG]).get("clusters") or []}
    assert servers <= {ENDPOINT}


def test_stack_output_control_plane_nodes_lists_every_node_and_single_outputs_stay_node_0s(three):
    nodes = from_outputs(three.outputs)
    assert [n.private_ip for n in nodes] == PRIVATE_IPS
    assert [n.public_ip for n in nodes] == PUBLIC_IPS
    assert [n.availability_zone for n in nodes] == ZONES
    assert [n.instance_id for n in nodes] == [three.mocks.resources[i].id for i in INSTANCES]
    assert len({n.name for n in nodes}) == 3
    assert three.outputs[out.NODE_PRIVATE_IP] == PRIVATE_IP and three.outputs[out.NODE_PUBLIC_IP] == PUBLIC_IP
    assert three.outputs[out.NODE_INSTANCE_ID] == three.mocks.resources["talos-dr-instance"].id


def test_the_snapshot_lambda_knows_every_node_and_reaches_each_from_every_zone(three):
    from infra.schedule import ENV_NODES
    from snapshot_lambda import handler as lh

    res = three.mocks.resources
    fn = three.one("aws:lambda/function:Function")
    env = fn.inputs["environment"]["variables"]
    assert env[ENV_NODES] == ",".join(PRIVATE_IPS) and ENV_NODES == "TALOS_DR_NODES"
    assert env[lh.ENV_NODE] == PRIVATE_IP, "node 0's, for a handler that reads only the one"
    subnets = [res[n] for n in ("talos-dr-lambda-subnet", "talos-dr-lambda-subnet-1", "talos-dr-lambda-subnet-2")]
    assert fn.inputs["vpcConfig"]["subnetIds"] == [s.id for s in subnets]
    assert [s.inputs["availabilityZone"] for s in subnets] == ZONES
    lambda_sg = res["talos-dr-lambda-sg"]
    assert fn.inputs["vpcConfig"]["securityGroupIds"] == [lambda_sg.id]
    # Every node sits in the node group, which admits apid from the Lambda's group; the Lambda may leave for it.
    apid = res["talos-dr-apid-from-lambda"].inputs
    assert (apid["securityGroupId"], apid["referencedSecurityGroupId"], apid["fromPort"]) == (
        res["talos-dr-node-sg"].id, lambda_sg.id, 50000)
    egress = res["talos-dr-lambda-to-apid"].inputs
    assert egress["referencedSecurityGroupId"] == res["talos-dr-node-sg"].id and egress["fromPort"] == 50000
    lambda_rt = res["talos-dr-lambda-rt"]
    for s in subnets:
        (assoc,) = [a for a in three.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
                    if a.inputs["subnetId"] == s.id]
        assert assoc.inputs["routeTableId"] == lambda_rt.id, "no route out but the S3 gateway endpoint"
        assert not any(s.inputs["cidrBlock"].startswith(p) for p in ("10.0.1.", "10.0.2.", "10.0.3."))


@pytest.mark.parametrize("value", ["0", "2", "4", "three", "-1", "1.5"])
def test_control_plane_nodes_other_than_1_or_3_are_refused_with_the_reason(value):
    with pytest.raises(ConfigValidationError) as info:
        run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": value})
    assert info.value.keys == ["controlPlaneNodes"]
    text = str(info.value)
    assert "use 1 or 3" in text and "2 nodes tolerate no loss" in text and "majority" in text
    assert "more than 3 is not supported by this project yet" in text


def test_three_nodes_need_room_for_three_subnets():
    with pytest.raises(ConfigValidationError) as info:
        run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3", "talos-dr:vpcCidr": "10.0.0.0/23"})
    assert info.value.keys == ["subnetCidr"] and "10.0.2.0/24, outside vpcCidr" in str(info.value)
    with pytest.raises(ConfigValidationError) as info:
        run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3",
                     "talos-dr:availabilityZone": "us-east-1z"})
    assert info.value.keys == ["availabilityZone"]


def test_one_node_has_no_load_balancer_and_no_second_anything(one):
    assert not one.of_type("aws:lb/loadBalancer:LoadBalancer")
    assert len(one.of_type("aws:ec2/instance:Instance")) == 1
    assert len(one.of_type("talos:machine/configurationApply:ConfigurationApply")) == 1
    (ready,) = one.dynamic("ready")
    assert "members" not in ready.inputs
    env = one.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert "TALOS_DR_NODES" not in env
    assert one.outputs[out.CLUSTER_ENDPOINT] == f"https://{PUBLIC_IP}:6443"
    assert not one.calls("aws:index/getAvailabilityZones:getAvailabilityZones"), "one node: no new lookups either"


# --- growing from one node to three: `pulumi up` adds, replaces nothing -------------------------------------------

# What growing changes on resources a one-node stack already has (docs/DEPLOY.md, "Growing from one node to three"),
# every one an in-place update: resource -> the inputs that change.
GROWTH_UPDATES = {
    # cluster.controlPlane.endpoint becomes the load balancer, cluster.apiServer.certSANs add it and the new nodes'
    # Elastic IPs: `.cluster` is applied without a reboot (talos v1.13.9 v1alpha1_runtime.go CanApplyImmediate).
    "talos-dr-apply": {"machineConfigurationInput"},
    # Waits again, for every member (an update: ClusterReadyProvider.diff).
    "talos-dr-ready": {"kubeconfig", "members"},
    # The local kubeconfig names the load balancer; the talosconfig lists three endpoints and nodes.
    "talos-dr-kubeconfig-file": {"content"},
    "talos-dr-talosconfig-file": {"content"},
    # The snapshot function: every node's address, a subnet in every zone.
    "talos-dr-snapshot": {"environment", "vpcConfig"},
    # What the state remembers, so that going back to one is refused at preview.
    "talos-dr-control-plane": {"nodes"},
    # Every node's instance id; its generation (the Bootstrap's trigger) stays node 0's id: nothing is bootstrapped.
    "talos-dr-bootstrap-generation": {"identities"},
}
def comparable(value):
    """An input as the engine compares it: an archive by its path (the mocks hand over the SDK's object)."""
    import pulumi

    if isinstance(value, pulumi.FileArchive):
        return ("FileArchive", value.path)
    return value


OPTION_KEYS = ("type", "parent", "protect", "retain_on_delete", "delete_before_replace", "ignore_changes",
               "replace_on_changes", "replacement_trigger", "provider")


def test_growing_to_three_keeps_every_existing_urn_input_and_option(one, three):
    for name, before in one.mocks.resources.items():
        assert name in three.mocks.resources, f"{name} would be deleted"
        after = three.mocks.resources[name]
        assert three.urn(name) == one.urn(name) if name in one.monitor.urns else True
        changed = {k for k in set(before.inputs) | set(after.inputs)
                   if comparable(before.inputs.get(k)) != comparable(after.inputs.get(k))}
        assert changed <= GROWTH_UPDATES.get(name, set()), f"{name}: {sorted(changed)} change"
        if name in one.monitor.options:
            for key in OPTION_KEYS:
                assert three.options(name)[key] == one.options(name)[key], f"{name}: option {key} changes"
    for typ, urn in one.monitor.components.items():
        assert urn in {*three.monitor.components.values()} or typ == "talos-dr:node:Node", typ
    assert one.urn("talos-dr-instance") == three.urn("talos-dr-instance")


def test_growing_changes_only_the_cluster_part_of_node_0s_machine_config(one, three):
    (before,) = one.calls("talos:machine/getConfiguration:getConfiguration")
    after = _configs(three)[PUBLIC_IP]["args"]
    assert {k for k in before if before[k] != after[k]} == {"clusterEndpoint", "configPatches"}
    old, new = (yaml.safe_load(a["configPatches"][0]) for a in (before, after))
    assert old["machine"] == new["machine"], "machine.* unchanged: nothing there that needs a reboot"
    assert {k for k in old["cluster"] if old["cluster"][k] != new["cluster"][k]} == {"apiServer"}
    assert before["configPatches"][1:] == after["configPatches"][1:]


def test_cluster_ready_is_updated_not_replaced_when_members_appear(one, three):
    (before,), (after,) = one.dynamic("ready"), three.dynamic("ready")
    diff = ClusterReadyProvider().diff("id", dict(before.inputs), dict(after.inputs))
    assert diff.changes is True and diff.replaces == []


def test_the_further_zones_must_exist_in_the_account(three):
    (args,) = three.calls("aws:index/getAvailabilityZones:getAvailabilityZones")
    assert args == {"state": "available"}
    with pytest.raises(Exception) as info:
        run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3", "talos-dr:availabilityZone": "us-east-1e"})
    assert "us-east-1g is not an available zone of this account" in str(info.value)
    assert "pulumi config set availabilityZone" in str(info.value)


class OlderNode0Mocks(Mocks):
    """Node 0 made before addresses were pinned: EC2 gave it another address, which ignore_changes keeps."""

    def new_resource(self, args):
        rid, outs = super().new_resource(args)
        if args.name == "talos-dr-instance":
            outs["privateIp"] = "10.0.1.57"
        return rid, outs


def test_node_0s_real_address_is_what_every_part_uses_when_it_predates_the_pin():
    run = run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3"}, mocks=OlderNode0Mocks())
    real = ["10.0.1.57", *PRIVATE_IPS[1:]]
    assert sorted(a.inputs["targetId"] for a in run.of_type("aws:lb/targetGroupAttachment:TargetGroupAttachment")) \
        == sorted(real)
    (args,) = run.calls("talos:client/getConfiguration:getConfiguration")
    assert args["nodes"] == real
    env = run.one("aws:lambda/function:Function").inputs["environment"]["variables"]
    assert env["TALOS_DR_NODES"] == ",".join(real)
    assert [m["address"] for m in run.dynamic("ready")[0].inputs["members"]] == real


def test_the_stack_remembers_its_size_and_a_preview_refuses_to_shrink_it(one, three):
    from infra.providers.control_plane_size import ControlPlaneSizeProvider

    (before,), (after,) = one.dynamic("size"), three.dynamic("size")
    assert (before.inputs["nodes"], after.inputs["nodes"]) == (1, 3)
    p = ControlPlaneSizeProvider()
    grow = p.check(dict(before.inputs), dict(after.inputs))
    assert grow.failures == [] and p.diff("id", dict(before.inputs), dict(after.inputs)).replaces == []
    (failure,) = p.check(dict(after.inputs), dict(before.inputs)).failures
    assert failure.property == "nodes"
    assert "went from 3 to 1" in failure.reason and "no quorum" in failure.reason
    assert "pulumi config set controlPlaneNodes 3" in failure.reason
    assert p.check({}, dict(after.inputs)).failures == [], "a new stack may start at three"
    assert p.check(dict(after.inputs), dict(after.inputs)).failures == []


def test_the_size_provider_pickles_by_reference():
    import base64

    from pulumi.dynamic.dynamic import serialize_provider

    from infra.providers.control_plane_size import ControlPlaneSizeProvider

    blob = base64.b64decode(serialize_provider(ControlPlaneSizeProvider()))
    assert b"infra.providers.control_plane_size" in blob and len(blob) < 1000


@pytest.mark.parametrize("cluster", ["talos-dr", "a" * 40, "internal-platform-production", "x1-" + "b" * 37])
def test_the_load_balancer_and_target_group_names_fit_elbs_32_characters(cluster):
    """ELBv2 names: at most 32 characters, alphanumerics and hyphens, no hyphen at either end, not "internal-..."
    (CreateLoadBalancer/CreateTargetGroup "Name"); Pulumi adds "-" and 7 random characters to the logical name."""
    import re

    run = run_program({**stack_file_config(), "talos-dr:controlPlaneNodes": "3", "talos-dr:clusterName": cluster})
    for typ in ("aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup"):
        auto = run.one(typ).name + "-abc1234"
        assert len(auto) <= 32 and re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?", auto), auto
        assert not auto.startswith("internal-"), auto
    if cluster == "talos-dr":  # a short name is used whole, as before
        assert run.one("aws:lb/loadBalancer:LoadBalancer").name == "talos-dr-api-lb"
