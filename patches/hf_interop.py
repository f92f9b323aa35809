"""Patches to and from standard transformers folders: sequence classification (classification,
regression, multi-label), token classification, and sentence-transformers (embeddings)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .backbone import Backbone
from .kinds import EMBEDDING, KINDS, TaskKind, kind_named
from .patch_file import PatchError, PatchFile


def _config_for(backbone: Backbone, patch: PatchFile):
    """The backbone's config with the patch's labels and problem type."""
    config = copy.deepcopy(backbone.model.config)
    n = patch.num_outputs
    config.num_labels = n
    config.architectures = None
    config.bitpatch_task = patch.task  # read back by `bitpatch import`
    config.bitpatch_max_length = patch.max_length
    kind = kind_named(patch.kind)
    config.problem_type = kind.hf_problem_type
    if not kind.labelled:
        config.id2label, config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
        return config
    config.id2label = dict(enumerate(patch.labels))
    config.label2id = {label: i for i, label in enumerate(patch.labels)}
    if "thresholds" in kind.options:
        config.bitpatch_thresholds = patch.label_thresholds()
    return config


def export_folder(backbone: Backbone, patch: PatchFile, out: Path) -> None:
    """Write the patch as the standard folder of its kind, with the backbone's tokenizer."""
    out = Path(out)
    if kind_named(patch.kind) is EMBEDDING:
        write_sentence_transformer(backbone, patch, out)
    else:
        export_patch(backbone, patch).save_pretrained(out)
    backbone.tokenizer.save_pretrained(out)


def patched_state(backbone: Backbone, patch: PatchFile) -> dict[str, torch.Tensor]:
    """The backbone's parameters (float32, CPU) with the patch's bias values in place."""
    state = {n: p.detach().float().cpu() for n, p in backbone.model.named_parameters()}
    state.update({n: v.float() for n, v in patch.biases.items()})
    return state


def export_tagger(backbone: Backbone, patch: PatchFile):
    """A float32 AutoModelForTokenClassification that computes the patch's per-token logits."""
    model = AutoModelForTokenClassification.from_config(_config_for(backbone, patch)).eval()
    state = {n: v for n, v in patched_state(backbone, patch).items() if not n.startswith("pooler.")}
    with torch.no_grad():
        _load_exact(getattr(model, model.base_model_prefix), state)
        model.classifier.weight.copy_(patch.head_weight)
        model.classifier.bias.copy_(patch.head_bias)
    return model


ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}


def write_sentence_transformer(backbone: Backbone, patch: PatchFile, out: Path) -> None:
    """A sentence-transformers folder (Transformer, Pooling, [Dense], [Normalize]) that
    encodes to the patch's embeddings."""
    if patch.pooling not in ST_POOLING:
        raise PatchError(
            f"sentence-transformers pools by mean or cls token; this patch uses "
            f"{patch.pooling!r}: retrain with --pooling mean",
            "pooling",
        )
    model = AutoModel.from_config(copy.deepcopy(backbone.model.config)).eval()
    with torch.no_grad():
        _load_exact(model, patched_state(backbone, patch))
    model.save_pretrained(out)
    hidden = backbone.spec.hidden_size
    modules = [("Transformer", ""), ("Pooling", "1_Pooling")]
    pooling = {mode: False for mode in ("pooling_mode_mean_tokens", "pooling_mode_cls_token")}
    pooling |= {ST_POOLING[patch.pooling]: True, "word_embedding_dimension": hidden}
    _write_json(out / "1_Pooling" / "config.json", pooling)
    if patch.head_weight is not None:
        modules.append(("Dense", "2_Dense"))
        dense = {"in_features": hidden, "out_features": patch.num_outputs, "bias": True}
        dense["activation_function"] = "torch.nn.modules.linear.Identity"
        _write_json(out / "2_Dense" / "config.json", dense)
        weights = {"linear.weight": patch.head_weight, "linear.bias": patch.head_bias}
        save_file(
            {k: v.contiguous() for k, v in weights.items()},
            str(out / "2_Dense" / "model.safetensors"),
        )
    if patch.normalize:
        modules.append(("Normalize", f"{len(modules)}_Normalize"))
    _write_json(
        out / "modules.json",
        [
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
            for i, (kind, path) in enumerate(modules)
        ],
    )
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": patch.max_length})
    _write_json(out / "bitpatch.json", {"task": patch.task, "kind": patch.kind})


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def export_patch(backbone: Backbone, patch: PatchFile):
    """A float32 transformers model that computes the patch's logits: sequence classification
    (classification, regression, multi_label) or token classification."""
    kind = kind_named(patch.kind)
    if kind.per_token:
        return export_tagger(backbone, patch)
    if kind is EMBEDDING:
        raise PatchError(
            "an embedding patch exports as a sentence-transformers folder (export_folder)", "kind"
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
    state = patched_state(backbone, patch)
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
    """A patch from a BitFit-tuned sequence- or token-classification model of this backbone;
    refuses other changes."""
    base = getattr(model, model.base_model_prefix)
    tuned = {n: p.detach().float().cpu() for n, p in base.named_parameters()}
    tagger = type(model).__name__.endswith("ForTokenClassification")
    if tagger:  # no pooler: a tagger reads every token
        head = model.classifier
    elif base.pooler is None:  # RoBERTa-style: classifier.dense plays the pooler
        tuned["pooler.dense.weight"] = model.classifier.dense.weight.detach().float()
        tuned["pooler.dense.bias"] = model.classifier.dense.bias.detach().float()
        head = model.classifier.out_proj
    else:
        head = model.classifier
    biases = {}
    for name, param in backbone.model.named_parameters():
        if tagger and name.startswith("pooler."):
            continue
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
    kind = imported_kind(config, tagger)
    labels = [config.id2label[i] for i in range(config.num_labels)] if kind.labelled else []
    own = "thresholds" in kind.options
    thresholds = getattr(config, "bitpatch_thresholds", None) if own else None
    return PatchFile(
        task=task,
        kind=kind.name,
        labels=[str(x) for x in labels],
        pooling="none" if tagger else "pooler",
        thresholds=[float(t) for t in thresholds] if thresholds else None,
        max_length=max_length,
        backbone=backbone.spec.name,
        backbone_sha256=backbone.spec.sha256,
        biases=biases,
        head_weight=head.weight.detach().float().cpu().clone(),
        head_bias=head.bias.detach().float().cpu().clone(),
        trainer={"method": "import"},
    )


def imported_kind(config, tagger: bool) -> TaskKind:
    """The patch kind of an imported model, from its class and problem type."""
    if tagger:
        return next(kind for kind in KINDS.values() if kind.per_token)
    problem = "regression" if config.num_labels == 1 else config.problem_type
    found = [kind for kind in KINDS.values() if kind.hf_problem_type == problem]
    return found[0] if found else kind_named("classification")


def load_for_import(model_dir: str):
    """The folder's model as the class its config names: token or sequence classification."""
    config = AutoConfig.from_pretrained(model_dir)
    tagger = any(a.endswith("ForTokenClassification") for a in config.architectures or ())
    auto = AutoModelForTokenClassification if tagger else AutoModelForSequenceClassification
    return auto.from_pretrained(model_dir, dtype=torch.float32)


def imported_task_name(config, model_dir: str) -> str:
    """The task name `export` recorded in the config, else one made from the folder's name."""
    recorded = getattr(config, "bitpatch_task", None)
    if recorded:
        return recorded
    name = re.sub(r"[^a-z0-9_.-]+", "-", Path(model_dir.rstrip("/")).name.lower()).strip("-.")
    return name[:64] or "imported"
