"""Patches to and from standard transformers sequence-classification folders."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

from .backbone import Backbone
from .patch_file import PatchError, PatchFile


def _config_for(backbone: Backbone, patch: PatchFile):
    """The backbone's config with the patch's labels and problem type."""
    config = copy.deepcopy(backbone.model.config)
    n = patch.num_outputs
    config.num_labels = n
    config.architectures = None
    config.bitpatch_task = patch.task  # read back by `bitpatch import`
    config.bitpatch_max_length = patch.max_length
    if patch.kind == "regression":
        config.problem_type = "regression"
        config.id2label, config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
    else:
        config.problem_type = "single_label_classification"
        config.id2label = dict(enumerate(patch.labels))
        config.label2id = {label: i for i, label in enumerate(patch.labels)}
    return config


def export_patch(backbone: Backbone, patch: PatchFile):
    """A float32 AutoModelForSequenceClassification that computes the patch's logits."""
    if patch.kind not in ("classification", "regression"):
        raise PatchError(
            f"export writes sequence-classification folders, for classification and "
            f"regression patches; this is a {patch.kind} patch, which export does not cover",
            "kind",
        )
    if patch.pooling != "pooler":
        raise PatchError(
            f"export needs pooling 'pooler' (what AutoModelForSequenceClassification "
            f"computes); this patch uses {patch.pooling!r}: retrain with "
            "--pooling pooler",
            "pooling",
        )
    model = AutoModelForSequenceClassification.from_config(_config_for(backbone, patch))
    model.eval()
    state = {n: p.detach().float().cpu() for n, p in backbone.model.named_parameters()}
    state.update({n: v.float() for n, v in patch.biases.items()})
    base = getattr(model, model.base_model_prefix)
    pooler_w, pooler_b = state.pop("pooler.dense.weight"), state.pop("pooler.dense.bias")
    with torch.no_grad():
        if base.pooler is not None:  # BERT-style: classifier on pooler output
            state["pooler.dense.weight"], state["pooler.dense.bias"] = pooler_w, pooler_b
            _load_exact(base, state)
            model.classifier.weight.copy_(patch.head_weight)
            model.classifier.bias.copy_(patch.head_bias)
        else:  # RoBERTa-style head: dense + tanh on <s>, then out_proj == pooler + linear
            _load_exact(base, state)
            model.classifier.dense.weight.copy_(pooler_w)
            model.classifier.dense.bias.copy_(pooler_b)
            model.classifier.out_proj.weight.copy_(patch.head_weight)
            model.classifier.out_proj.bias.copy_(patch.head_bias)
    return model


def _load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load parameters by name; every parameter of `module` must be given."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"backbone and classification model differ: missing {missing}, unexpected {unexpected}"
        )


def import_model(backbone: Backbone, model, task: str, max_length: int) -> PatchFile:
    """A patch from a BitFit-tuned classification model of this backbone; refuses other changes."""
    base = getattr(model, model.base_model_prefix)
    tuned = {n: p.detach().float().cpu() for n, p in base.named_parameters()}
    if base.pooler is None:  # RoBERTa-style: classifier.dense plays the pooler
        tuned["pooler.dense.weight"] = model.classifier.dense.weight.detach().float()
        tuned["pooler.dense.bias"] = model.classifier.dense.bias.detach().float()
        head = model.classifier.out_proj
    else:
        head = model.classifier
    biases = {}
    for name, param in backbone.model.named_parameters():
        original = param.detach().float().cpu()
        if name not in tuned:
            raise PatchError(f"tensor '{name}' of the backbone is missing from the model", name)
        if name.endswith("bias"):
            if not torch.equal(tuned[name], original):
                biases[name] = tuned[name]
        elif not torch.equal(tuned[name], original):
            raise PatchError(
                f"non-bias weight '{name}' differs from the backbone (max abs diff "
                f"{(tuned[name] - original).abs().max():.3g}); only BitFit models "
                "(bias-only fine-tuning) can become patches",
                name,
            )
    config = model.config
    regression = config.problem_type == "regression" or config.num_labels == 1
    labels = [] if regression else [config.id2label[i] for i in range(config.num_labels)]
    return PatchFile(
        task=task,
        kind="regression" if regression else "classification",
        labels=[str(x) for x in labels],
        pooling="pooler",
        max_length=max_length,
        backbone=backbone.spec.name,
        backbone_sha256=backbone.spec.sha256,
        biases=biases,
        head_weight=head.weight.detach().float().cpu().clone(),
        head_bias=head.bias.detach().float().cpu().clone(),
        trainer={"method": "import"},
    )


def imported_task_name(config, model_dir: str) -> str:
    """The task name `export` recorded in the config, else one made from the folder's name."""
    recorded = getattr(config, "bitpatch_task", None)
    if recorded:
        return recorded
    name = re.sub(r"[^a-z0-9_.-]+", "-", Path(model_dir.rstrip("/")).name.lower()).strip("-.")
    return name[:64] or "imported"
