"""The trained model: backbone + pooling + linear head, and which parameters learn."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..patches.pooling import pool
from .kinds import TrainingKind

# The paper's component names (Table 4) -> pattern over BERT/RoBERTa parameter names
COMPONENTS = {
    "query": r"attention\.self\.query\.bias$",
    "key": r"attention\.self\.key\.bias$",
    "value": r"attention\.self\.value\.bias$",
    "attention-output": r"attention\.output\.dense\.bias$",
    "attention-layernorm": r"attention\.output\.LayerNorm\.bias$",
    "intermediate": r"intermediate\.dense\.bias$",
    "output": r"layer\.\d+\.output\.dense\.bias$",
    "output-layernorm": r"layer\.\d+\.output\.LayerNorm\.bias$",
    "pooler": r"^pooler\.dense\.bias$",
    "embeddings-layernorm": r"^embeddings\.LayerNorm\.bias$",
}
PRESETS = {"bq+bm2": ["query", "intermediate"], "all": list(COMPONENTS)}
METHODS = ("bitfit", "frozen", "full")


def parse_bias_terms(spec: str | None) -> list[str]:
    """'query,intermediate' or a preset name -> component list (default: every bias)."""
    if not spec:
        return PRESETS["all"]
    if spec in PRESETS:
        return PRESETS[spec]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ValueError(
            f"unknown bias terms {unknown}; choose from {list(COMPONENTS)} or a "
            f"preset {list(PRESETS)}"
        )
    return names


def bias_names(backbone: nn.Module, components: list[str]) -> list[str]:
    """Backbone bias parameter names that belong to the chosen components."""
    patterns = [re.compile(COMPONENTS[c]) for c in components]
    return [
        n
        for n, _ in backbone.named_parameters()
        if n.endswith("bias") and any(p.search(n) for p in patterns)
    ]


class PatchModel(nn.Module):
    """Backbone, pooling and head; forward returns loss and logits for transformers' Trainer."""

    def __init__(self, backbone: nn.Module, num_outputs: int, pooling: str, kind: TrainingKind):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.kind = kind
        hidden = backbone.config.hidden_size
        self.dropout = nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
        self.head = nn.Linear(hidden, num_outputs)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        """(B, T) inputs -> {'loss', 'logits' (B, n), or (B, T, n) for token tasks}."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if self.kind.per_token:  # every token: (B, T, n)
            logits = self.head(self.dropout(out.last_hidden_state))
        else:
            pooled = pool(out, attention_mask, self.pooling)  # (B, H)
            logits = self.head(self.dropout(pooled))  # (B, n)
        result = {"logits": logits}
        if labels is not None:
            result["loss"] = self.kind.loss(logits, labels)
        return result


def set_trainable(model: PatchModel, method: str, components: list[str]) -> list[str]:
    """Freeze per method; return the backbone bias names that train (they go in the patch)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    for param in model.backbone.parameters():
        param.requires_grad_(method == "full")
    trained = bias_names(model.backbone, components) if method == "bitfit" else []
    params = dict(model.backbone.named_parameters())
    for name in trained:
        params[name].requires_grad_(True)
    return trained


def trainable_fraction(model: PatchModel) -> float:
    """Trainable parameters (head included) as a percentage of the backbone's."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return 100 * trainable / sum(p.numel() for p in model.backbone.parameters())


def trained_biases(model: PatchModel, names: list[str]) -> dict[str, torch.Tensor]:
    """The trained bias values (full values, float32) for the patch."""
    params = dict(model.backbone.named_parameters())
    return {n: params[n].detach().float().cpu().clone() for n in names}


class PairModel(nn.Module):
    """An embedding task: both texts of a pair through the backbone and pooling, normalised.

    With scores (0-1): mean squared error of their cosine; without (labels < 0): in-batch
    contrastive, each text's pair against the batch's other pairs. `logits` (B, 2): the pair's
    cosine and the highest cosine to another pair of the batch.
    """

    SCALE = 20.0  # similarity scale of the contrastive loss

    def __init__(self, backbone: nn.Module, pooling: str):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.head = None  # the embedding is the pooled vector itself

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """(B, T) -> (B, H) unit vectors."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return nn.functional.normalize(pool(out, attention_mask, self.pooling).float(), dim=-1)

    def forward(
        self,
        input_ids,
        attention_mask,
        pair_input_ids,
        pair_attention_mask,
        token_type_ids=None,
        pair_token_type_ids=None,
        labels=None,
    ):
        u = self.embed(input_ids, attention_mask, token_type_ids)  # (B, H)
        v = self.embed(pair_input_ids, pair_attention_mask, pair_token_type_ids)  # (B, H)
        similarity = u @ v.T  # (B, B)
        cosine = similarity.diagonal()  # (B,)
        others = similarity - 3 * torch.eye(len(u), device=u.device)  # the diagonal out of reach
        result = {"logits": torch.stack([cosine, others.max(-1).values], dim=-1)}  # (B, 2)
        if labels is not None:
            if bool((labels >= 0).all()):
                result["loss"] = nn.functional.mse_loss(cosine, labels.float())
            else:
                target = torch.arange(len(u), device=u.device)
                result["loss"] = nn.functional.cross_entropy(self.SCALE * similarity, target)
        return result
