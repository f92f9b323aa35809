"""bitpatch as a Ray Serve application: N replicas of the same FastAPI app, one shared store.

Each replica is a full server (backbone, engine, batcher, registry) configured by the
`BITPATCH_*` variables of its environment; the replicas share the store named by
`BITPATCH_STORE` and follow each other's changes through it, as `--processes` and separate
hosts do. Ray's options (replicas, autoscaling, resources) come from `RayOptions`.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from pydantic import BaseModel, Field, model_validator
from ray import serve
from ray.serve import Application

from .app import create_app
from .settings import Settings


class RayOptions(BaseModel):
    """The Ray Serve side of a deployment; `serve run bitpatch.ray:build_app key=value ...`."""

    num_replicas: int = Field(1, ge=1, description="fixed replica count (without autoscaling)")
    min_replicas: int | None = Field(None, ge=0, description="autoscaling: fewest replicas")
    max_replicas: int | None = Field(None, ge=1, description="autoscaling: most replicas")
    target_ongoing_requests: float = Field(
        32, gt=0, description="autoscaling: in-flight requests per replica to aim for"
    )
    max_ongoing_requests: int = Field(
        512, ge=1, description="requests a replica takes at once (its batcher queues them)"
    )
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per replica (its torch threads)")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica (fractions share one GPU)")
    ready_timeout_s: float = Field(
        300, gt=0, description="how long a new replica may take to load the backbone"
    )
    name: str = Field("bitpatch", description="the Ray Serve deployment's name")

    @model_validator(mode="after")
    def _autoscaling_bounds(self) -> RayOptions:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both min_replicas and max_replicas")
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        return self

    def deployment_options(self) -> dict:
        """Keyword arguments for `Deployment.options`."""
        options: dict = {
            "name": self.name,
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus},
            "health_check_timeout_s": self.ready_timeout_s,
        }
        if self.max_replicas is None:
            options["num_replicas"] = self.num_replicas
        else:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        return options


def _replica_app() -> FastAPI:
    """Built on each replica, from that replica's environment; without bitpatch's own gRPC
    port (replicas share nodes, and Ray Serve routes only through its proxies)."""
    return create_app(Settings(grpc_port=0))


@serve.ingress(_replica_app)
class BitpatchReplica:
    """One replica; Ray routes HTTP to its app and sends traffic once `check_health` passes."""

    async def check_health(self) -> None:
        """Waits while the backbone loads (so no request meets a loading replica); fails after."""
        state = self.app.state.server
        while not state.is_ready:
            if state.failure is not None:
                raise RuntimeError(f"bitpatch failed to start: {state.failure}")
            await asyncio.sleep(0.1)


def build_app(args: RayOptions | dict) -> Application:
    """The application builder `serve run` and `serve deploy` call with a config's `args`."""
    options = args if isinstance(args, RayOptions) else RayOptions.model_validate(args)
    deployment = serve.deployment(BitpatchReplica)
    return deployment.options(**options.deployment_options()).bind()
