"""Ray Serve entry point (`pip install 'bitpatch[ray]'`).

serve run bitpatch.ray:build_app num_replicas=2
serve run bitpatch.ray:app                      # one replica
serve deploy docker/ray/serve.yaml              # a config file for a running cluster
"""

from __future__ import annotations

from .server.ray_serve import BitpatchReplica, RayOptions, build_app

app = build_app(RayOptions())

__all__ = ["BitpatchReplica", "RayOptions", "app", "build_app"]
