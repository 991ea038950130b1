"""The stack's cluster connection: a provider with server-side apply, a namespace, default deny."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.components.k8s import create, labels


@dataclass(frozen=True)
class ClusterArgs:
    namespace: str
    kubeconfig: str | None
    context: str | None


class Cluster(pulumi.ComponentResource):
    """A provider from the stack's kubeconfig/context, one namespace, ingress denied by default.

    Every other component is created with ``provider=cluster.provider`` and so inherits it.
    """

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("blueprint:index:Cluster", name, None, opts)
        self.provider = k8s.Provider(
            "k8s",
            # A kubeconfig given as content holds credentials: kept encrypted in the state.
            kubeconfig=pulumi.Output.secret(args.kubeconfig) if args.kubeconfig else None,
            context=args.context,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(provider=self.provider)
        own = labels(args.namespace, "namespace")
        # Pod Security Admission "restricted": the API server refuses any pod that is not hardened.
        pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn")}
        self.namespace = create(
            k8s.core.v1.Namespace, args.namespace, self, None, {**own, **pss}, opts=child
        )
        # Objects take the namespace as this Output, so each waits for the namespace to exist.
        self.name: pulumi.Output[str] = self.namespace.metadata.name
        create(
            k8s.networking.v1.NetworkPolicy,
            "default-deny-ingress",
            self,
            self.name,
            own,
            opts=child,
            spec={"podSelector": {}, "policyTypes": ["Ingress"]},
        )
        self.register_outputs({"namespace": self.name})
