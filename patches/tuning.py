"""Process tuning in one place: CPU features, kernel caches, attention kernels, the GC."""

from __future__ import annotations

import gc
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)
KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AMX or AVX-512 BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


@lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """The CPU's vendor id (GenuineIntel, AuthenticAMD, ...), or "" where /proc/cpuinfo has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def bound_kernel_caches(entries: int) -> None:
    """Cap oneDNN's primitive cache and PyTorch's ideep cache at `entries` shapes each.

    Both keep kernels (and, for bf16, repacked weights: ~1.5 MB an entry on the default
    backbone) for every new input shape, 1,024 of each by default; packed batches have a new
    token count almost every forward. Read when the first kernel is made: call before the
    first forward.
    """
    for name in KERNEL_CACHE_VARIABLES:
        os.environ[name] = str(entries)


def kernel_cache_caps() -> dict[str, str | None]:
    """The caps in force (for /info)."""
    return {name: os.environ.get(name) for name in KERNEL_CACHE_VARIABLES}


def choose_attention_kernels(cudnn: bool) -> None:
    """Process-wide: whether CUDA attention may use cuDNN, which builds a graph for every new
    batch shape (tens of ms each on an H100; a server batch is often a new shape)."""
    torch.backends.cuda.enable_cudnn_sdp(cudnn)
    log.info("event=attention_kernels cudnn=%s", cudnn)


def freeze_heap() -> None:
    """Collect once, then exempt every object alive now from later collections.

    What a server loads (torch, transformers, the app, the registry) lives as long as the
    process; left in the oldest generation, each full collection under traffic walks all of
    it while holding the interpreter lock.
    """
    gc.collect()
    gc.freeze()
    log.info("event=gc_frozen objects=%d", gc.get_freeze_count())


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (`top -H`, /proc/<pid>/task/<tid>/comm; at most 15
    bytes). Threads it starts later, such as torch's OpenMP team, inherit the name, so the CPU
    of a server's forwards can be told from its event loop's. A no-op where prctl is missing."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        log.debug("event=thread_name_unavailable name=%s", name)
