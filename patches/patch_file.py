"""The bitpatch/1 file: a safetensors file of bias values, a linear head, and metadata."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from .backbone import BackboneSpec
from .examples import check_examples_shape
from .kinds import KINDS, kind_named

FORMAT = "bitpatch/1"
KIND_NAMES = tuple(KINDS)
POOLINGS = ("pooler", "cls", "mean", "none")  # none: every token (token_classification only)
INPUTS = ("text", "text_pair")  # optional metadata 'inputs': what a request row must be
MAX_LENGTH = re.compile(r"[0-9]{1,6}")
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REQUIRED_KEYS = ("format", "task", "backbone", "backbone_sha256", "kind", "pooling", "max_length")
JSON_OBJECT_KEYS = ("metrics", "trainer")


class PatchError(ValueError):
    """A patch file that cannot be served; `key` names the offending field or tensor."""

    def __init__(self, message: str, key: str | None = None, code: str = "invalid_patch"):
        super().__init__(message)
        self.key = key
        self.code = code


@dataclass
class PatchFile:
    """One task's bias values (full values, not deltas), head, and self-description."""

    task: str
    kind: str
    labels: list[str]
    pooling: str
    max_length: int
    backbone: str
    backbone_sha256: str
    biases: dict[str, torch.Tensor]  # backbone parameter name -> (dim,)
    head_weight: torch.Tensor | None  # (n, hidden); None only for an embedding (identity)
    head_bias: torch.Tensor | None  # (n,)
    inputs: str = ""  # "text", "text_pair", or "" (older patches: either is accepted)
    threshold: float | None = None  # multi_label: one threshold for every label
    thresholds: list[float] | None = None  # multi_label: one per label
    normalize: bool = True  # embedding: L2-normalise the output
    metrics: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    # golden inputs and the predictions the trainer computed (see patches/examples.py)
    examples: list = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def num_outputs(self) -> int:
        """Head rows: the labels' count, 1 for regression, the output size for an embedding."""
        kind = kind_named(self.kind)
        if kind.labelled:
            return len(self.labels)
        if kind.head_optional:
            return len(self.head_bias) if self.head_bias is not None else 0
        return 1

    def label_thresholds(self) -> list[float]:
        """multi_label: each label's threshold (0.5 unless the patch says otherwise)."""
        if self.thresholds is not None:
            return list(self.thresholds)
        return [0.5 if self.threshold is None else self.threshold] * len(self.labels)

    def metadata(self) -> dict[str, str]:
        """The safetensors `__metadata__` block (all values strings)."""
        meta = {
            "format": FORMAT,
            "task": self.task,
            "backbone": self.backbone,
            "backbone_sha256": self.backbone_sha256,
            "kind": self.kind,
            "pooling": self.pooling,
            "max_length": str(self.max_length),
        }
        if self.created_at:
            meta["created_at"] = self.created_at
        if self.inputs:
            meta["inputs"] = self.inputs
        kind = kind_named(self.kind)
        if kind.labelled:
            meta["labels"] = json.dumps(self.labels)
        if self.threshold is not None:
            meta["threshold"] = json.dumps(self.threshold)
        if self.thresholds is not None:
            meta["thresholds"] = json.dumps(self.thresholds)
        if "normalize" in kind.options:
            meta["normalize"] = "true" if self.normalize else "false"
        for key in JSON_OBJECT_KEYS:
            if getattr(self, key):
                meta[key] = json.dumps(getattr(self, key), sort_keys=True)
        if self.examples:
            meta["examples"] = json.dumps(self.examples)
        return meta

    def to_bytes(self) -> bytes:
        """Serialise as bitpatch/1 safetensors bytes."""
        tensors = {f"bias.{name}": t for name, t in self.biases.items()}
        if self.head_weight is not None:
            tensors["head.weight"] = self.head_weight
            tensors["head.bias"] = self.head_bias
        return serialize(tensors, self.metadata())

    def save(self, path: str | Path) -> Path:
        """Write the file (atomically: temporary name, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(self.to_bytes())
        tmp.replace(path)
        return path


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """Safetensors bytes with sorted keys, so the same patch always gives the same bytes."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        blob = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a file's bytes (the version identity in the store)."""
    return hashlib.sha256(data).hexdigest()


def read_patch(source: bytes | str | Path, spec: BackboneSpec | None = None) -> PatchFile:
    """Parse and validate a patch; with `spec`, also check it fits that backbone."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    patch = decode_patch(data)
    if spec is not None:
        check_fits(patch, spec)
    return patch


@dataclass(frozen=True)
class CheckedPatch:
    """A patch file validated once against one backbone: its bytes, their sha256, the metadata
    block and the decoded patch. The store and the engine take it as it is."""

    data: bytes
    sha256: str
    meta: dict[str, str]
    patch: PatchFile
    backbone_sha256: str  # the backbone it was checked against


def check_patch(data: bytes, spec: BackboneSpec) -> CheckedPatch:
    """Decode, validate and fit-check a patch file's bytes once, hashing them once."""
    tensors, meta = _load_raw(data)
    patch = _decoded(tensors, meta)
    check_fits(patch, spec)
    return CheckedPatch(data, sha256_bytes(data), meta, patch, spec.sha256)


def patch_of(patch: PatchFile | CheckedPatch) -> PatchFile:
    """The decoded patch of either form."""
    return patch.patch if isinstance(patch, CheckedPatch) else patch


def decode_patch(data: bytes) -> PatchFile:
    """Structural validation: safetensors, metadata, tensor names, finiteness, head shape."""
    return _decoded(*_load_raw(data))


def _decoded(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> PatchFile:
    fields = _parse_metadata(meta)
    biases, head_weight, head_bias = _split_tensors(tensors, fields["kind"])
    patch = PatchFile(biases=biases, head_weight=head_weight, head_bias=head_bias, **fields)
    _check_head(patch)
    return patch


def _unreadable(reason: str) -> PatchError:
    return PatchError(
        f"not a readable safetensors file ({reason}); expected the bytes of a bitpatch/1 "
        "file as written by `bitpatch train` - check the upload is complete",
        key="file",
    )


def _load_raw(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    meta = patch_metadata(data)
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, Exception) as err:
        raise _unreadable(str(err)) from err
    return tensors, meta


def patch_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` block, checked only for framing (header JSON, data size): cheap."""
    if len(data) < 8:
        raise _unreadable(f"{len(data)} bytes, shorter than the 8-byte header size")
    header_len = int.from_bytes(data[:8], "little")
    if not 2 <= header_len <= len(data) - 8:
        raise _unreadable(f"header size {header_len} does not fit a {len(data)}-byte file")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (ValueError, UnicodeDecodeError) as err:
        raise _unreadable(f"header is not JSON: {err}") from err
    if not isinstance(header, dict):
        raise _unreadable("header is not a JSON object")
    ends = [
        t["data_offsets"][1]
        for k, t in header.items()
        if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets", ())) == 2
    ]
    if max(ends, default=0) != len(data) - 8 - header_len:
        raise _unreadable("the tensor data is truncated or has trailing bytes")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise PatchError("'__metadata__' must map keys to strings", "__metadata__")
    return meta


def _require(meta: dict[str, str], key: str) -> str:
    if key not in meta:
        raise PatchError(f"metadata key '{key}' is missing; a bitpatch/1 file needs {key}", key)
    return meta[key]


def _json_field(meta: dict[str, str], key: str, expected: type):
    try:
        value = json.loads(meta[key])
    except (json.JSONDecodeError, RecursionError) as err:
        shown = meta[key][:200]
        raise PatchError(f"metadata '{key}' is not valid JSON: {shown!r}", key) from err
    if not isinstance(value, expected) or isinstance(value, bool):
        name = expected.__name__ if isinstance(expected, type) else "number"
        raise PatchError(f"metadata '{key}' must be a JSON {name}, got {meta[key]!r}", key)
    return value


def _parse_metadata(meta: dict[str, str]) -> dict:
    for key in REQUIRED_KEYS:
        _require(meta, key)
    if meta["format"] != FORMAT:
        raise PatchError(
            f"unknown format {meta['format']!r}; this server reads {FORMAT!r}", "format"
        )
    kind, pooling = meta["kind"], meta["pooling"]
    if kind not in KINDS:
        raise PatchError(f"metadata 'kind' must be one of {KIND_NAMES}, got {kind!r}", "kind")
    if pooling not in POOLINGS:
        raise PatchError(
            f"metadata 'pooling' must be one of {POOLINGS}, got {pooling!r}", "pooling"
        )
    if (pooling == "none") != KINDS[kind].per_token:
        raise PatchError(
            f"metadata 'pooling' is {pooling!r} for kind {kind!r}; token_classification "
            "patches use 'none' (every token), and only they do",
            "pooling",
        )
    inputs = meta.get("inputs", "")
    if inputs and inputs not in INPUTS:
        raise PatchError(f"metadata 'inputs' must be one of {INPUTS}, got {inputs!r}", "inputs")
    if not MAX_LENGTH.fullmatch(meta["max_length"]) or int(meta["max_length"]) < 2:
        raise PatchError(
            f"metadata 'max_length' must be an integer >= 2, got {meta['max_length']!r}",
            "max_length",
        )
    fields = {
        "task": meta["task"],
        "kind": kind,
        "pooling": pooling,
        "max_length": int(meta["max_length"]),
        "backbone": meta["backbone"],
        "backbone_sha256": meta["backbone_sha256"],
        "created_at": meta.get("created_at", ""),
        "inputs": inputs,
        "labels": _parse_labels(meta, kind),
        **_parse_kind_options(meta, kind),
    }
    for key in JSON_OBJECT_KEYS:
        fields[key] = _json_field(meta, key, dict) if key in meta else {}
    if "examples" in meta:
        fields["examples"] = _json_field(meta, "examples", list)
        problem = check_examples_shape(fields["examples"])
        if problem is not None:
            raise PatchError(f"metadata 'examples' {problem}", key="examples")
    return fields


def _parse_labels(meta: dict[str, str], kind: str) -> list[str]:
    fewest = KINDS[kind].fewest_labels
    if not fewest:
        if KINDS[kind].head_optional and "labels" in meta:
            raise PatchError(
                f"metadata 'labels' is set, but {kind} patches have no labels", "labels"
            )
        return []
    labels = _json_field(meta, "labels", list) if "labels" in meta else None
    if labels is None:
        raise PatchError(
            f"metadata 'labels' is missing; {kind} patches list their "
            "labels as a JSON list of strings",
            "labels",
        )
    if len(labels) < fewest or not all(isinstance(x, str) for x in labels):
        raise PatchError(
            f"metadata 'labels' must list >= {fewest} strings for {kind}, got {labels!r}",
            "labels",
        )
    if len(set(labels)) != len(labels):
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        raise PatchError(f"metadata 'labels' has duplicate labels {dupes}", "labels")
    return labels


def _parse_kind_options(meta: dict[str, str], kind: str) -> dict:
    """multi_label's threshold(s) and embedding's normalize; refused on other kinds."""
    for owner in KINDS.values():
        for key in owner.options:
            if key in meta and key not in KINDS[kind].options:
                raise PatchError(f"metadata '{key}' is for {owner} patches, not {kind}", key)
    options: dict = {}
    if "threshold" in meta and "thresholds" in meta:
        raise PatchError(
            "metadata has both 'threshold' and 'thresholds'; keep one (a number for every "
            "label, or a list with one per label)",
            "thresholds",
        )
    if "threshold" in meta:
        options["threshold"] = _probability(
            _json_field(meta, "threshold", (int, float)), "threshold"
        )
    if "thresholds" in meta:
        values = _json_field(meta, "thresholds", list)
        options["thresholds"] = [_probability(v, "thresholds") for v in values]
        labels = _json_field(meta, "labels", list) if "labels" in meta else []
        if len(values) != len(labels):
            raise PatchError(
                f"metadata 'thresholds' has {len(values)} values for {len(labels)} labels; "
                "give one per label, in label order",
                "thresholds",
            )
    if "normalize" in meta:
        if meta["normalize"] not in ("true", "false"):
            raise PatchError(
                f"metadata 'normalize' must be 'true' or 'false', got {meta['normalize']!r}",
                "normalize",
            )
        options["normalize"] = meta["normalize"] == "true"
    return options


def _probability(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PatchError(f"metadata '{key}' values must be numbers in [0, 1], got {value!r}", key)
    return float(value)


def _split_tensors(tensors: dict[str, torch.Tensor], kind: str):
    biases = {}
    for key, tensor in tensors.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise PatchError(
                f"tensor '{key}' has dtype {tensor.dtype}; use float32, float16 or bfloat16", key
            )
        if not torch.isfinite(tensor.float()).all():
            raise PatchError(f"tensor '{key}' has non-finite values (nan or inf)", key)
        if key.startswith("bias.") and key.endswith("bias"):
            biases[key[len("bias.") :]] = tensor.float()
        elif key not in ("head.weight", "head.bias"):
            raise PatchError(
                f"tensor '{key}' is not a bias term: a patch holds only "
                "'bias.<backbone name ending in bias>', 'head.weight', 'head.bias'",
                key,
            )
    heads = [key for key in ("head.weight", "head.bias") if key in tensors]
    if KINDS[kind].head_optional and not heads:
        return biases, None, None  # no projection: the pooled vector itself
    for key in ("head.weight", "head.bias"):
        if key not in tensors:
            also = f" (an {kind} has both or neither)" if KINDS[kind].head_optional else ""
            raise PatchError(f"tensor '{key}' is missing; every patch carries its head{also}", key)
    return biases, tensors["head.weight"].float(), tensors["head.bias"].float()


def _check_head(patch: PatchFile) -> None:
    if patch.head_weight is None:
        return
    if kind_named(patch.kind).head_optional and patch.head_weight.dim() == 2:
        rows = patch.head_weight.shape[0]
    else:
        rows = patch.num_outputs
    if patch.head_weight.dim() != 2 or patch.head_weight.shape[0] != rows:
        raise PatchError(
            f"tensor 'head.weight' has shape {tuple(patch.head_weight.shape)}; "
            f"expected ({rows}, hidden) for {patch.kind} with {rows} outputs "
            "(head rows must equal the number of labels)",
            "head.weight",
        )
    if tuple(patch.head_bias.shape) != (rows,):
        raise PatchError(
            f"tensor 'head.bias' has shape {tuple(patch.head_bias.shape)}; expected ({rows},)",
            "head.bias",
        )


def check_fits(patch: PatchFile, spec: BackboneSpec) -> None:
    """Check a decoded patch against one backbone: fingerprint, names, shapes, lengths."""
    if patch.backbone_sha256 != spec.sha256:
        raise PatchError(
            f"patch was made for backbone '{patch.backbone}' (sha256 "
            f"{patch.backbone_sha256[:12]}...), this server runs '{spec.name}' (sha256 "
            f"{spec.sha256[:12]}...); retrain the patch on this backbone",
            key="backbone_sha256",
            code="backbone_mismatch",
        )
    for name, tensor in patch.biases.items():
        key = f"bias.{name}"
        if name not in spec.bias_shapes:
            raise PatchError(f"tensor '{key}' is not a bias of backbone '{spec.name}'", key)
        if tuple(tensor.shape) != spec.bias_shapes[name]:
            raise PatchError(
                f"tensor '{key}' has shape {tuple(tensor.shape)}; the backbone's "
                f"is {spec.bias_shapes[name]}",
                key,
            )
    if patch.head_weight is not None and patch.head_weight.shape[1] != spec.hidden_size:
        raise PatchError(
            f"tensor 'head.weight' has {patch.head_weight.shape[1]} columns; the "
            f"backbone's hidden size is {spec.hidden_size}",
            "head.weight",
        )
    if patch.max_length > spec.max_positions:
        raise PatchError(
            f"metadata 'max_length' is {patch.max_length}; the backbone allows at "
            f"most {spec.max_positions} positions",
            "max_length",
        )
    if patch.pooling == "pooler" and not spec.has_pooler:
        raise PatchError(
            "metadata 'pooling' is 'pooler' but the backbone has no pooler; use 'cls' or 'mean'",
            "pooling",
        )
