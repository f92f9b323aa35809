"""The backends benchmark's arithmetic: the FLOPs it credits and the host it names."""

from __future__ import annotations

import torch

from bench.backends import host_cpu, useful_flops
from tiny import make_model


def test_flops_count_real_tokens_only():
    model, _ = make_model("bert")  # hidden 32, intermediate 64, 2 layers
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])  # rows of 3 and 1 real tokens
    linear = 2 * 4 * (4 * 32 * 32 + 2 * 32 * 64)  # 4 real tokens through every Linear
    attention = 4 * (3**2 + 1**2) * 32
    assert useful_flops(model, [{"attention_mask": mask}]) == 2 * (linear + attention)


def test_the_host_is_named_with_its_kernel_flags():
    host = host_cpu()
    assert host["model"] and host["threads"] == torch.get_num_threads()
    assert host["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert set(host["flags"]) <= {
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "avx512_vnni",
        "avx_vnni",
        "amx_bf16",
    }
