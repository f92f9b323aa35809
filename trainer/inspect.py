"""How far each bias moved from the backbone, per layer and component (the paper's Figure 1)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..patches.backbone import load_backbone
from ..patches.patch_file import read_patch
from .model import COMPONENTS

LAYER = re.compile(r"layer\.(\d+)\.")


def bias_changes(patch_path: Path, backbone: str) -> dict[tuple[str, str], float]:
    """{(layer, component): mean |patch bias - backbone bias|} for every patched bias."""
    bb = load_backbone(backbone, dtype="float32", device="cpu")
    patch = read_patch(patch_path, bb.spec)
    params = dict(bb.model.named_parameters())
    changes = {}
    for name, value in patch.biases.items():
        component = next((c for c, pat in COMPONENTS.items() if re.search(pat, name)), name)
        match = LAYER.search(name)
        layer = match.group(1) if match else ("pooler" if "pooler" in name else "embeddings")
        changes[(layer, component)] = float((value - params[name].float()).abs().mean())
    return changes


def _axes(changes):
    layers = sorted({k[0] for k in changes}, key=lambda x: (not x.isdigit(), x.zfill(3)))
    components = [c for c in COMPONENTS if any(k[1] == c for k in changes)]
    return layers, components


def format_table(changes: dict[tuple[str, str], float]) -> str:
    """A plain-text table: rows are components, columns layers."""
    if not changes:
        return "the patch changes no bias (its head alone, if any, differs from the backbone)"
    layers, components = _axes(changes)
    lines = ["component".ljust(22) + "".join(f"{layer:>12}" for layer in layers)]
    for c in components:
        cells = [changes.get((layer, c)) for layer in layers]
        lines.append(
            c.ljust(22) + "".join(f"{v:12.5f}" if v is not None else f"{'-':>12}" for v in cells)
        )
    return "\n".join(lines)


def plot_heatmap(changes: dict[tuple[str, str], float], out: Path) -> None:
    """Heatmap PNG of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, components = _axes(changes)
    grid = torch.full((len(components), len(layers)), float("nan"))
    for (layer, c), v in changes.items():
        grid[components.index(c), layers.index(layer)] = v
    fig, ax = plt.subplots(figsize=(1 + 0.8 * len(layers), 1 + 0.45 * len(components)))
    image = ax.imshow(grid.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(components)), components)
    ax.set_xlabel("layer")
    ax.set_title("mean |bias change| vs backbone")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
