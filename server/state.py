"""What the running server holds: settings, metrics, and (once loaded) engine, registry, batcher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources

import torch

from ..patches.backbone import Backbone, bound_kernel_caches, load_backbone, resolve_device
from ..patches.engine import MultiTaskEngine
from ..patches.patch_file import PatchError
from .batcher import Batcher
from .errors import ApiError
from .metrics import Metrics
from .registry import Registry
from .settings import FORWARD_MODES, Settings, lone_threads, plan_workers
from .store import PatchStore

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Shared by every request; `registry` and `batcher` are None until the backbone is ready."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    engine: MultiTaskEngine | None = None
    registry: Registry | None = None
    batcher: Batcher | None = None
    failure: str | None = None
    engine_factory: Callable[[Backbone, bool | None], MultiTaskEngine] = MultiTaskEngine
    tokenize_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="bitpatch-tokenize")
    )
    # torch work (loading, forwards) runs only on these `workers` threads, each with
    # `threads_per_worker` torch threads. On CPU the default is 2 workers x (cores / 2):
    # two forwards in flight, and on 2 cores no OpenMP team at all, so a core stolen by the
    # event loop slows one forward instead of stalling a team (docs/BENCHMARKS.md, tuning log)
    # Once the batcher starts, each of these threads runs its worker loop until shutdown.
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

    def load(self) -> None:
        """Blocking: backbone, engine, store, registry, demo patches (runs off the event loop)."""
        s = self.settings
        torch.set_num_threads(self.threads_per_worker)
        bound_kernel_caches(s.kernel_cache)
        backbone = load_backbone(s.backbone, s.dtype, s.device)
        if backbone.device.type == "cuda":
            choose_attention_kernels(s.cudnn_attention)
        self.engine = self.engine_factory(backbone, FORWARD_MODES[s.forward])
        self.engine.warm_up()
        registry = Registry(PatchStore(s.store), self.engine)
        registry.load()
        if s.demo_patches and not registry.tasks():
            seed_demo_patches(registry)
        self.metrics.tasks.set(len(registry.tasks()))
        self.registry = registry

    def ready(self) -> tuple[Registry, Batcher]:
        """Registry and batcher, or 503 while loading."""
        if self.registry is None or self.batcher is None:
            reason = self.failure or "the backbone and patch store are still loading"
            raise ApiError(
                503,
                "not_ready",
                f"server not ready: {reason}; retry shortly",
                headers={"Retry-After": "2"},
            )
        return self.registry, self.batcher


def choose_attention_kernels(cudnn: bool) -> None:
    """Process-wide: whether CUDA attention may use cuDNN. PyTorch >= 2.10 prefers cuDNN on
    Hopper, and cuDNN builds a graph for every new batch shape: tens of ms each on an H100,
    and a server batch of variable-length rows is often a new shape (docs/BENCHMARKS.md, 4)."""
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    log.info("event=attention_kernels cudnn=%s", cudnn)


def seed_demo_patches(registry: Registry) -> None:
    """Upload the packaged demo patches into an empty store (skipped for other backbones)."""
    folder = resources.files("bitpatch.patches.demo")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".safetensors"):
            continue
        try:
            data = entry.read_bytes()
            task = entry.name.removesuffix(".safetensors")
            info, _ = registry.upload(task, data)
            log.info("event=demo_patch_loaded task=%s version=%d", task, info.version)
        except PatchError as err:
            log.warning("event=demo_patch_skipped file=%s error=%s", entry.name, err)
