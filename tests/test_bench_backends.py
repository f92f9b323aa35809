"""The backends benchmark's arithmetic and tables: the FLOPs it credits, the host it names."""

from __future__ import annotations

import torch

from bench.backends import _server_lines, _short_lines, host_cpu, useful_flops
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


def test_short_batch_and_server_tables_name_every_forward():
    short = {
        "small_tokens": 128,
        "threads": 1,
        "rows": [
            {
                "rows": 1,
                "real_tokens": 19.0,
                "ms": {"onnxruntime": 6.4, "hybrid": 6.3, "packed": 11.4},
                "vs_packed": {"onnxruntime": 0.56, "hybrid": 0.55, "packed": 1.0},
            }
        ],
    }
    servers = {
        "hybrid": {
            "one_client_p50_ms": 4.8,
            "c32_1_input_per_s": 295,
            "c32_1to4_inputs_per_s": 333,
        },
        "packed": {
            "one_client_p50_ms": 8.6,
            "c32_1_input_per_s": 229,
            "c32_1to4_inputs_per_s": 315,
        },
        "rounds": 4,
        "seconds": 8.0,
    }
    table = "\n".join(_short_lines(short) + _server_lines(servers))
    assert "| 1 | 19 | 6.4 | 6.3 | 11.4 | 0.56 | 0.55 |" in table
    assert "| hybrid | 4.8 | 295 | 333 |" in table and "| packed | 8.6 | 229 | 315 |" in table
    assert "4 interleaved rounds of 8 s" in table
