"""The CUDA paths: engine, server and trainer on a GPU agree with the CPU reference.

Skipped without a CUDA device (CI has none); `pytest -m gpu` runs them on a GPU host.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from transformers import AutoModel

from bitpatch.patches.backbone import load_backbone
from bitpatch.patches.engine import MultiTaskEngine
from bitpatch.patches.patch_file import read_patch
from bitpatch.testing import ServerProcess
from bitpatch.trainer.evaluate import evaluate_patch
from bitpatch.trainer.train import train

from test_engine import TASK_SHAPES, mixed_rows, reference_logits, run_mixed
from test_server_api import ITEMS, Expected, assert_same
from test_trainer import settings_for, toy_sentiment
from tiny import make_model, random_patch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def cuda_engine(folder, dtype: str, packed: bool):  # packed: the padding-free walk
    """An engine on the GPU with the TASK_SHAPES patches registered (fingerprinted in fp32)."""
    forward = "packed" if packed else "padded"
    engine = MultiTaskEngine(load_backbone(str(folder), dtype, "cuda"), forward)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32)
    patches = [
        random_patch(model, f"t{i}", n, pooling, seed=i, fraction=frac, max_length=48)
        for i, (n, pooling, frac) in enumerate(TASK_SHAPES)
    ]
    for p in patches:
        engine.register(p.task, p)
    return engine, patches


def test_auto_picks_cuda_and_half_precision(tiny_bert_dir):
    backbone = load_backbone(str(tiny_bert_dir))
    assert backbone.device.type == "cuda"
    want = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert backbone.dtype == want and next(backbone.model.parameters()).dtype == want


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_mixed_batch_on_cuda_equals_cpu_reference(family_dir, packed, request):
    folder = request.getfixturevalue(family_dir)
    engine, patches = cuda_engine(folder, "float32", packed)
    rows = mixed_rows(random.Random(2), len(patches), 24)
    for (t, item), got in zip(rows, run_mixed(engine, rows, patches), strict=True):
        assert got.device.type == "cpu"
        torch.testing.assert_close(got, reference_logits(folder, patches[t], item), **FP32)


FP32 = {"atol": 1e-4, "rtol": 1e-4}  # CUDA kernels sum in another order than the CPU's


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_packed_equals_padded_on_cuda(tiny_roberta_dir, dtype):
    rows = mixed_rows(random.Random(5), len(TASK_SHAPES), 20)
    padded, patches = cuda_engine(tiny_roberta_dir, dtype, packed=False)
    packed, _ = cuda_engine(tiny_roberta_dir, dtype, packed=True)
    want = run_mixed(padded, rows, patches)
    for (t, item), a, b in zip(rows, want, run_mixed(packed, rows, patches), strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)
        reference = reference_logits(tiny_roberta_dir, patches[t], item)
        torch.testing.assert_close(a, reference, atol=0.1, rtol=0.1)


def test_server_on_cuda_answers_as_the_cpu_engine(tiny_bert_dir, tmp_path):
    model = make_model("bert")[0]
    patches = [random_patch(model, f"g{i}", 2 + i % 3, "mean", seed=40 + i) for i in range(4)]
    expected = Expected(tiny_bert_dir)
    want = {p.task: expected(p, ITEMS) for p in patches}  # CPU float32 engine
    with (
        ServerProcess(tiny_bert_dir, tmp_path / "store", "--device", "cuda") as srv,
        httpx.Client(base_url=srv.url, timeout=60) as http,
    ):
        info = http.get("/info").json()
        assert info["device"].startswith("cuda") and info["dtype"] == "float32"
        assert info["cudnn_attention"] is False  # the default: no per-shape cuDNN graphs
        for p in patches:
            assert http.put(f"/tasks/{p.task}/patch", content=p.to_bytes()).status_code == 201

        def ask(i: int) -> None:
            patch = patches[i % len(patches)]
            reply = http.post(f"/tasks/{patch.task}/predict", json={"inputs": ITEMS})
            assert reply.status_code == 200, reply.text
            assert_same(reply.json()["predictions"], want[patch.task])

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(ask, range(64)))  # concurrent: mixed-task batches on the GPU


def test_bitfit_training_on_cuda(tiny_bert_dir, tmp_path):
    data = toy_sentiment(seed=4)
    out = tmp_path / "toy.safetensors"
    result = train(settings_for(tiny_bert_dir, out, bf16=None), data)  # bf16 where the GPU has it
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    original = dict(AutoModel.from_pretrained(tiny_bert_dir).named_parameters())
    for name, param in result.model.backbone.named_parameters():
        assert param.device.type == "cuda"
        if not name.endswith("bias"):
            assert torch.equal(param.cpu(), original[name]), name
    patch = read_patch(out)
    assert evaluate_patch(patch, data, str(tiny_bert_dir), device="cuda") == patch.metrics
    assert evaluate_patch(patch, data, str(tiny_bert_dir), device="cpu") == patch.metrics
