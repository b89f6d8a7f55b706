"""talos-dr: a Talos Kubernetes cluster on AWS (one control-plane node, or three: controlPlaneNodes), the bucket its etcd
backups go to, and their schedule."""

from pathlib import Path

import pulumi

from infra.config import load_config
from infra.stack import build, require_pulumi_cli

require_pulumi_cli()  # before anything registers: an old CLI would drop replacement_trigger silently
cfg = load_config()
stack = build(cfg, talos_dir=Path(__file__).resolve().parent / ".talos")

for key, value in stack.outputs.items():
    pulumi.export(key, value)
