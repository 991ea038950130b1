"""The service image: built from the repo's Dockerfile and pushed, or an existing CI-built one."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi
import pulumi_docker as docker

from infra.config import ImageConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


class Image(pulumi.ComponentResource):
    """``ref`` is what pods run: the pushed ``repo@sha256:...`` digest, so every build rolls out."""

    ref: pulumi.Output[str]

    def __init__(self, name: str, args: ImageConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("blueprint:index:Image", name, None, opts)
        if args.ref is not None:
            self.ref = pulumi.Output.from_input(args.ref)
        else:
            # Relative to the working directory (infra/ under Pulumi), so the inputs do not change
            # from one machine's checkout path to another's.
            root = os.path.relpath(REPO_ROOT)
            built = docker.Image(
                "image",
                image_name=f"{args.registry}/{args.repository}:{args.tag}",
                build=docker.DockerBuildArgs(
                    context=root,
                    dockerfile=os.path.join(root, "Dockerfile"),
                    platform=args.platform,
                ),
                registry=docker.RegistryArgs(
                    server=args.registry, username=args.username, password=args.password
                )
                if args.username
                else None,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.ref = built.repo_digest
        self.register_outputs({"ref": self.ref})
