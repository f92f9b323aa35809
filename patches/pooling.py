"""Pooling a backbone's output into one vector per row: pooler, cls or mean."""

from __future__ import annotations

import torch


def pool(out, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, H), as the patch format defines each pooling (mean comes back in float32)."""
    hidden = out.last_hidden_state  # (B, T, H)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":  # summed in float32: a bf16 sum over many tokens loses digits
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        return (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
    if pooling == "pooler":
        if out.pooler_output is None:
            raise ValueError("pooling 'pooler' needs a backbone with a pooler layer")
        return out.pooler_output
    raise ValueError(f"pooling must be pooler, cls or mean; got {pooling!r}")
