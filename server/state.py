"""What the running server holds: settings, metrics, the batch plan and (once loaded) the
pipeline, through which the registry and engine are reached."""

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
from ..patches.layer_breaks import between_layers
from ..patches.patch_file import PatchError
from ..patches.tuning import bound_kernel_caches, choose_attention_kernels, name_os_thread
from .core.batcher import Batcher, BatchPlan, express_rows_for
from .core.pipeline import PredictPipeline
from .core.registry import Registry
from .errors import NotReady
from .metrics import Metrics
from .settings import Settings
from .store import open_store

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Shared by every request; `pipeline` is None until the backbone and store are loaded.
    `engine_factory` is the engine seam (bench serves its engine designs through it)."""

    settings: Settings
    engine_factory: EngineFactory = MultiTaskEngine
    metrics: Metrics = field(init=False)
    pipeline: PredictPipeline | None = None
    failure: str | None = None
    following: asyncio.Task | None = None  # the store-sync loop
    plan: BatchPlan = field(init=False)
    # torch work (loading, forwards) runs only on these `plan.threads` threads; once batching
    # starts, each of them runs its worker loop until shutdown
    inference: ThreadPoolExecutor = field(init=False)

    def __post_init__(self):
        self.metrics = Metrics(self.settings.metrics_tasks)
        try:
            on_gpu = resolve_device(self.settings.device).type == "cuda"
        except RuntimeError:  # a bad device name fails, with its message, when the backbone loads
            on_gpu = False
        self.plan = BatchPlan.from_settings(self.settings, on_gpu, torch.get_num_threads())
        self.inference = ThreadPoolExecutor(
            self.plan.threads, thread_name_prefix="bitpatch-inference"
        )

    def load(self) -> Registry:
        """Blocking: backbone, engine, store, registry, demo patches (runs off the event loop)."""
        s, plan = self.settings, self.plan
        name_os_thread("bp-forward-0")  # before torch starts this thread's OpenMP team
        torch.set_num_threads(plan.threads_per_worker)
        bound_kernel_caches(s.kernel_cache)
        backbone = load_backbone(s.backbone, s.dtype, s.device)
        if backbone.device.type == "cuda":
            choose_attention_kernels(s.cudnn_attention)
        cache_root = Path(s.forward_cache) if s.forward_cache else None
        engine = self.engine_factory(backbone, s.forward, cache_root)
        engine.warm_up()
        if express_rows_for(plan.express_rows, engine.forward_yields):  # workers' long
            with between_layers(lambda: None):  # forwards break: set up what they run then
                engine.warm_up(lengths=(128,))
        if plan.lone_threads:  # and as a widened lone forward runs
            torch.set_num_threads(plan.lone_threads)
            engine.warm_up()
            torch.set_num_threads(plan.threads_per_worker)
        registry = Registry(open_store(s.store), engine, s.keep_versions, s.max_resident)
        registry.load()
        if s.demo_patches and not registry.tasks():
            seed_demo_patches(registry)
        self.metrics.tasks.set(registry.task_count())
        return registry

    def start_serving(self, registry: Registry) -> None:
        """Batching starts on the inference threads; from here on the server is ready."""
        batcher = Batcher(registry.engine, self.metrics, self.plan, self.inference)
        batcher.start()
        self.pipeline = PredictPipeline(registry, batcher)

    @property
    def is_ready(self) -> bool:
        """Whether requests are served (the one readiness answer; see `ready`)."""
        return self.pipeline is not None

    def ready(self) -> PredictPipeline:
        """The pipeline (and through it the registry), or NotReady while loading."""
        if self.pipeline is None:
            reason = self.failure or "the backbone and patch store are still loading"
            raise NotReady(f"server not ready: {reason}; retry shortly", {"Retry-After": "2"})
        return self.pipeline

    def has_task(self, task: str | None) -> bool:
        """Whether the task is served (False while loading): request metrics label by it."""
        return self.pipeline is not None and self.pipeline.registry.has_task(task)


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
