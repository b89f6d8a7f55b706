"""Add-ons: what runs on the cluster once it is bootstrapped — the configured Secrets and Argo CD."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.config import KubernetesSecret

ARGOCD_REPO = "https://argoproj.github.io/argo-helm"
ARGOCD_CHART = "argo-cd"
ARGOCD_NAMESPACE = "argocd"
# Namespaces every cluster already has; creating them would fail.
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass
class AddonsArgs:
    kubeconfig: pulumi.Input[str]
    argocd_chart_version: str
    secrets: Sequence[KubernetesSecret] = ()
    # The cluster's API must answer before anything talks to it (infra.providers.cluster_ready.ClusterReady):
    # pulumi-kubernetes marks a cluster it cannot reach at configure time unreachable for the whole run.
    depends_on: Sequence[pulumi.Resource] = ()


class Addons(pulumi.ComponentResource):
    argocd_status: pulumi.Output[dict]
    secret_names: pulumi.Output[list[str]]

    def __init__(self, name: str, args: AddonsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("talos-dr:addons:Addons", name, None, opts)
        provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=pulumi.Output.secret(args.kubeconfig),
            # A refresh while the cluster is gone (node lost, total loss) drops these resources from state instead
            # of failing, so `pulumi up --refresh` can rebuild; the up then recreates them on the new cluster.
            delete_unreachable=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        on_cluster = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(args.depends_on))

        wanted = sorted({ARGOCD_NAMESPACE, *(s.namespace for s in args.secrets)} - BUILTIN_NAMESPACES)
        namespaces = {
            ns: k8s.core.v1.Namespace(f"{name}-ns-{ns}", metadata={"name": ns}, opts=on_cluster) for ns in wanted
        }

        def in_namespace(ns: str) -> pulumi.ResourceOptions:
            deps = [*args.depends_on, *([namespaces[ns]] if ns in namespaces else [])]
            return pulumi.ResourceOptions(parent=self, provider=provider, depends_on=deps)

        names = []
        for secret in args.secrets:
            names.append(f"{secret.namespace}/{secret.name}")
            k8s.core.v1.Secret(
                f"{name}-secret-{secret.namespace}-{secret.name}",
                metadata={"name": secret.name, "namespace": secret.namespace},
                type="Opaque",
                # Values come from secret config and stay secrets in state and in previews.
                string_data={k: pulumi.Output.secret(v) for k, v in secret.data.items()},
                opts=pulumi.ResourceOptions.merge(
                    in_namespace(secret.namespace),
                    pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"]),
                ),
            )

        argocd = k8s.helm.v3.Release(
            f"{name}-argocd",
            name="argocd",
            chart=ARGOCD_CHART,
            version=args.argocd_chart_version,  # pinned: a rebuilt cluster runs the same Argo CD
            repository_opts={"repo": ARGOCD_REPO},
            namespace=ARGOCD_NAMESPACE,
            create_namespace=False,  # the Namespace above owns it
            atomic=True,
            timeout=900,
            opts=in_namespace(ARGOCD_NAMESPACE),
        )

        self.argocd_status = argocd.status
        self.secret_names = pulumi.Output.from_input(names)
        self.register_outputs({"argocd_status": self.argocd_status, "secret_names": self.secret_names})
