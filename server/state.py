"""What the running server holds: settings, metrics, and (once loaded) registry and pipeline."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ..patches.backbone import load_backbone, resolve_device
from ..patches.engine import EngineFactory, MultiTaskEngine
from ..patches.patch_file import PatchError
from ..patches.tuning import bound_kernel_caches, choose_attention_kernels, name_os_thread
from .core.pipeline import PredictPipeline
from .core.registry import Registry
from .errors import NotReady
from .metrics import Metrics
from .settings import Settings, lone_threads, plan_workers
from .store import open_store

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Shared by every request; `registry` and `pipeline` are None until the backbone is ready."""

    settings: Settings
    engine_factory: EngineFactory = MultiTaskEngine
    metrics: Metrics = field(default_factory=Metrics)
    registry: Registry | None = None
    pipeline: PredictPipeline | None = None
    failure: str | None = None
    following: asyncio.Task | None = None  # the store-sync loop
    # torch work (loading, forwards) runs only on these `workers` threads, each with
    # `threads_per_worker` torch threads: on CPU two forwards in flight by default, so a core
    # taken by the event loop slows one forward instead of stalling a whole OpenMP team.
    # Once batching starts, each of these threads runs its worker loop until shutdown.
    inference: ThreadPoolExecutor = field(init=False)
    workers: int = field(init=False)
    threads_per_worker: int = field(init=False)
    lone_threads: int | None = field(init=False)  # torch threads of a forward that runs alone

    def __post_init__(self):
        try:
            on_gpu = resolve_device(self.settings.device).type == "cuda"
        except RuntimeError:  # a bad device name fails, with its message, when the backbone loads
            on_gpu = False
        cores = torch.get_num_threads()
        self.workers, self.threads_per_worker = plan_workers(self.settings, on_gpu, cores)
        self.lone_threads = lone_threads(self.settings, self.workers, self.threads_per_worker)
        self.inference = ThreadPoolExecutor(self.workers, thread_name_prefix="bitpatch-inference")

    def load(self) -> Registry:
        """Blocking: backbone, engine, store, registry, demo patches (runs off the event loop)."""
        s = self.settings
        name_os_thread("bp-forward-0")  # before torch starts this thread's OpenMP team
        torch.set_num_threads(self.threads_per_worker)
        bound_kernel_caches(s.kernel_cache)
        backbone = load_backbone(s.backbone, s.dtype, s.device)
        if backbone.device.type == "cuda":
            choose_attention_kernels(s.cudnn_attention)
        cache_root = Path(s.forward_cache) if s.forward_cache else None
        engine = self.engine_factory(backbone, s.forward, cache_root)
        engine.warm_up()
        if self.lone_threads:  # and as a widened lone forward runs
            torch.set_num_threads(self.lone_threads)
            engine.warm_up()
            torch.set_num_threads(self.threads_per_worker)
        registry = Registry(open_store(s.store), engine, s.keep_versions)
        registry.load()
        if s.demo_patches and not registry.tasks():
            seed_demo_patches(registry)
        self.metrics.tasks.set(len(registry.tasks()))
        return registry

    def ready(self) -> PredictPipeline:
        """The pipeline (and through it the registry), or NotReady while loading."""
        if self.pipeline is None:
            reason = self.failure or "the backbone and patch store are still loading"
            raise NotReady(f"server not ready: {reason}; retry shortly", {"Retry-After": "2"})
        return self.pipeline


def seed_demo_patches(registry: Registry) -> None:
    """Upload the packaged demo patches into an empty store (skipped for other backbones)."""
    folder = resources.files("bitpatch.patches.demo")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".safetensors"):
            continue
        try:
            task = entry.name.removesuffix(".safetensors")
            info, _ = registry.upload(task, entry.read_bytes())
            log.info("event=demo_patch_loaded task=%s version=%d", task, info.version)
        except PatchError as err:
            log.warning("event=demo_patch_skipped file=%s error=%s", entry.name, err)
