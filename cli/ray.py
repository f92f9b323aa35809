"""Ray Serve entry point (`pip install 'bitpatch[ray]'`).

serve run bitpatch.ray:build_app num_replicas=2
serve run bitpatch.ray:app                      # one replica
serve deploy docker/ray/serve.yaml              # a config file for a running cluster

`app` is built when it is looked up, not when this module is imported.
"""

from __future__ import annotations

from ray.serve import Application

from .server.ray_serve import BitpatchReplica, RayOptions, build_app

__all__ = ["BitpatchReplica", "RayOptions", "build_app"]  # and `app`, built on lookup


def __getattr__(name: str) -> Application:
    if name == "app":
        return build_app(RayOptions())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
