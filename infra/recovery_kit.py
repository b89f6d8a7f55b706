"""Recovery kit: on every `pulumi up`, ``s3://<bucket>/recovery/<clusterName>.kit.age``, encrypted to ``ageRecipients``.

What the Pulumi state holds and a rebuild needs — the Talos secrets bundle, the stack's settings (secret ones too),
the bucket and the outputs DR reads — as one age file next to the snapshots, so losing the state loses nothing the
operator's age identity cannot bring back (``python -m dr.rebuild``; the format is ``dr.core.recovery_kit``).

A plain ``aws.s3.BucketObjectv2`` whose content is computed in an apply, not a dynamic provider: the object is an
ordinary S3 put that Pulumi already knows how to create, update and show in a diff, and it needs no provider process
with its own AWS credentials. age encryption is randomised (a fresh file key each time), so every `pulumi up` writes a
new version of the object (the bucket is versioned, and older kits stay readable) and every preview shows it as an
update. The content is a Pulumi secret: the ciphertext is harmless, but the plaintext it is computed from is not.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from dr.core import recovery_kit as kit
from dr.core.age_keys import recipients as parse_recipients

# Object metadata naming the principal that wrote a kit version (x-amz-meta-written-by).
WRITTEN_BY = kit.WRITTEN_BY
# Namespaces of the settings the kit keeps: the AWS provider's (aws:region) and the project's own.
KIT_CONFIG_NAMESPACES = ("aws:", "talos-dr:")


def stack_config() -> tuple[dict[str, str], dict[str, str]]:
    """The stack's settings as the engine handed them to this program: (plain, secret), full keys, string values."""
    from pulumi.runtime.config import CONFIG, get_config, get_config_env, is_config_secret

    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for key in sorted({*CONFIG.get(), *get_config_env()}):
        if not key.startswith(KIT_CONFIG_NAMESPACES):
            continue
        value = get_config(key)
        if value is None:
            continue
        (secret if is_config_secret(key) else plain)[key] = value if isinstance(value, str) else str(value)
    return plain, secret


@dataclass
class NodeVolumes:
    """One control-plane node's data volumes, for the kit of a stack with more than one node."""

    index: int  # 0: the bootstrap node
    name: str  # as in the controlPlaneNodes output
    availability_zone: pulumi.Input[str]
    volume_ids: Mapping[str, pulumi.Input[str]]  # data volume name -> vol-...


@dataclass
class RecoveryKitArgs:
    bucket_name: pulumi.Input[str]
    cluster_name: str
    region: str
    recipients: Sequence[str]  # ageRecipients: at least one
    machine_secrets: pulumi.Input[Any]  # the provider's machine_secrets, turned into talosctl's layout here
    outputs: Mapping[str, pulumi.Input[Any]] = field(default_factory=dict)  # plain outputs by name
    volume_ids: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # data volume name -> vol-...
    # A stack of several nodes: every node's volumes, recorded with their node (``volume_ids`` then stays empty).
    node_volumes: Sequence[NodeVolumes] = ()
    config: tuple[Mapping[str, str], Mapping[str, str]] | None = None  # (plain, secret); default: stack_config()
    tags: Mapping[str, str] = field(default_factory=dict)
    # The deployer's ARN (aws:PrincipalArn), recorded as the object's `written-by` metadata: the bucket policy lets
    # only the deployers write under recovery/, and `talos-dr rebuild` shows who wrote each version.
    writer: pulumi.Input[str] | None = None
    bucket_ready: Sequence[pulumi.Resource] = ()  # the bucket policy: the kit is written (and read back) after it


def sealed_kit(args: RecoveryKitArgs, stack: str, project: str, bundle: Mapping[str, Any], bucket: str,
               outputs: Mapping[str, Any], volume_ids: Mapping[str, str],
               plain: Mapping[str, str], secret: Mapping[str, str],
               node_volumes: Sequence[Mapping[str, Any]] = ()) -> str:
    """The kit, sealed to ``args.recipients``, base64 (BucketObjectv2's ``content_base64``). ``node_volumes``: the
    per-node entries of a stack with several nodes (``dataVolumes`` with ``node``, ``nodeName``,
    ``availabilityZone``); else ``volume_ids``, the one node's volumes by name, as a one-node kit always held them."""
    volumes = tuple(node_volumes) or tuple({"name": n, "id": v} for n, v in sorted(volume_ids.items()))
    doc = kit.Kit(project=project, stack=stack, cluster_name=args.cluster_name, region=args.region, bucket=bucket,
                  secrets_bundle=kit.bundle_yaml(bundle), config=plain, secret_config=secret, outputs=dict(outputs),
                  data_volumes=volumes)
    kit.decode(kit.encode(doc))  # what dr.rebuild will check, checked before it is written
    return base64.b64encode(kit.seal(doc, parse_recipients(args.recipients, where="ageRecipients"))).decode()


class RecoveryKit(pulumi.ComponentResource):
    key: pulumi.Output[str]

    def __init__(self, name: str, args: RecoveryKitArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:recovery:RecoveryKit", name, None, opts)
        from infra.talos import talosctl_bundle

        plain, secret = args.config if args.config is not None else stack_config()
        stack, project = pulumi.get_stack(), pulumi.get_project()
        names = sorted(args.outputs)
        volumes = sorted(args.volume_ids)
        # (node, volume name) of each per-node entry, then its id and its node's zone among the inputs.
        per_node = [(n, v) for n in sorted(args.node_volumes, key=lambda n: n.index) for v in sorted(n.volume_ids)]

        def build(values: list[Any]) -> str:
            bucket, machine_secrets, *rest = values
            outs = dict(zip(names, rest[:len(names)], strict=True))
            rest = rest[len(names):]
            vols = dict(zip(volumes, rest[:len(volumes)], strict=True))
            rest = rest[len(volumes):]
            entries = [{"name": v, "id": rest[2 * i], "node": n.index, "nodeName": n.name,
                        "availabilityZone": rest[2 * i + 1]} for i, (n, v) in enumerate(per_node)]
            return sealed_kit(args, stack, project, talosctl_bundle(machine_secrets), bucket, outs, vols, plain, secret,
                              entries)

        content: pulumi.Output[str] = pulumi.Output.all(
            args.bucket_name, args.machine_secrets, *(args.outputs[n] for n in names),
            *(args.volume_ids[v] for v in volumes),
            *(x for n, v in per_node for x in (n.volume_ids[v], n.availability_zone)),
        ).apply(build)
        sealed: pulumi.Output[str] = pulumi.Output.secret(content)
        key = kit.kit_key(args.cluster_name)
        obj = aws.s3.BucketObjectv2(
            f"{name}-kit",
            bucket=args.bucket_name,
            key=key,
            content_base64=sealed,
            content_type="application/octet-stream",
            # S3 records this SHA-256 at upload and nobody can change it afterwards; `talos-dr rebuild` checks the kit
            # it downloads against it. With Object Lock on, S3 also refuses a PUT without a checksum
            # (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock-managing.html, pulumi-aws review
            # minor 4).
            checksum_algorithm="SHA256",
            metadata={WRITTEN_BY: args.writer} if args.writer is not None else None,
            tags=dict(args.tags),
            # `pulumi destroy` (with or without --exclude-protected) leaves every version of the kit in the bucket:
            # the provider would otherwise delete all of them (terraform-provider-aws internal/service/s3
            # resourceObjectDelete -> deleteAllObjectVersions: the kit a lost stack is rebuilt from), and the bucket policy denies the
            # delete anyway (NoDeletesButLifecycle). retain_on_delete drops it from the state without a delete call.
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["contentBase64"], retain_on_delete=True,
                                        depends_on=list(args.bucket_ready)),
        )
        self.key = obj.key
        self.register_outputs({"key": self.key})
