"""The Open Inference Protocol (KServe v2) in bitpatch's terms, shared by REST and gRPC: every
task is a model named as the task, its versions the task's versions; inputs `text` and
optional `text_pair` (BYTES [N]); outputs by task kind."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import orjson

from .... import __version__
from ....patches.encoding import Item
from ....patches.engine import TaskHead
from ....patches.kinds import TWO_D_OUTPUTS
from ...core.pipeline import Outcome, TaskCall
from ...errors import InvalidRequest, UnknownVersion
from ...limits import Limits
from ..native.request import check_inputs
from .tensors import InputTensor, OutputTensor

SERVER_NAME = "bitpatch"
EXTENSIONS = ("model_repository", "binary_tensor_data")
PLATFORM = "bitpatch"
INPUTS = ("text", "text_pair")


@dataclass(frozen=True)
class InferCall:
    """What an infer request asks, in either transport: its task call (the requested outputs
    checked on the leased head) and the transport's own request (ids, binary choices)."""

    asked: TaskCall
    outputs: list[str]  # requested output names; empty: every output of the task's kind
    request: object

    def tensors(self, outcome: Outcome) -> list[OutputTensor]:
        """The output tensors answered."""
        names = chosen_outputs(outcome.head, self.asked.task, self.outputs)
        return output_tensors(outcome.head, outcome.predictions, names)


def infer_call(
    task: str,
    version: int | None,
    items: list[Item],
    outputs: list[str],
    request: object,
    key: str | None,
) -> InferCall:
    """An infer request's call: its outputs are checked on the head before the forward;
    `key` (X-Bitpatch-Key) is what a rollout splits by."""
    check = partial(chosen_outputs, task=task, requested=outputs)
    return InferCall(TaskCall(task, items, version, check, key), outputs, request)


def server_metadata() -> dict:
    """`GET /v2`."""
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def parse_version(text: str | None, task: str) -> int | None:
    """A model version as the protocol writes it (a string; empty: the active version)."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise UnknownVersion(
            f"model {task!r} has no version {text!r}; versions are integers >= 1 "
            f"(GET /v2/models/{task} lists them)"
        )
    return int(text)


def model_metadata(task: str, versions: list[int], head: TaskHead, hidden_size: int) -> dict:
    """`GET /v2/models/{task}[/versions/{v}]`: inputs, outputs by kind, kind and labels."""
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    if head.takes_pairs:
        inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": [-1]})
    width = head.kind.output_width(head, hidden_size)
    outputs = [
        {"name": name, "datatype": datatype, "shape": [-1, width] if two_d(name) else [-1]}
        for name, datatype in head.kind.v2_outputs
    ]
    return {
        "name": task,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"kind": head.kind.name, "labels": list(head.labels)},
    }


async def describe(pipeline, task: str, version: int | None) -> dict:
    """Model metadata of a stored version (the active one for None; it lists every version)."""
    versions = sorted(pipeline.registry.versions(task))
    number, head = await pipeline.head(task, version)
    hidden = pipeline.registry.engine.backbone.spec.hidden_size
    return model_metadata(task, versions if version is None else [number], head, hidden)


def ready_version(registry, task: str, version: str | None) -> int:
    """The version a readiness check names (the active one when empty), if it is stored:
    every stored version is served on demand."""
    number = parse_version(version, task) or registry.active_version(task)
    registry.version(task, number)
    return number


def refuse_classification(name: str, parameters) -> None:
    """The classification extension is not served: its outputs say the same."""
    if "classification" in parameters:
        raise InvalidRequest(
            f"output {name!r} asks for the classification extension, which bitpatch does not "
            "serve; read the 'label' and 'scores' outputs (labels in model metadata)"
        )


def two_d(output: str) -> bool:
    """Whether an output has a column per label or dimension."""
    return output in TWO_D_OUTPUTS


def items_of(tensors: list[InputTensor], limits: Limits) -> list[Item]:
    """The predict inputs of `text` and optional `text_pair` (an empty pair: no pair)."""
    by_name: dict[str, InputTensor] = {}
    for tensor in tensors:
        if tensor.name not in INPUTS:
            raise InvalidRequest(
                f"unknown input {tensor.name!r}; the inputs are 'text' (BYTES [N]) and "
                "optionally 'text_pair' (BYTES [N])"
            )
        if tensor.name in by_name:
            raise InvalidRequest(f"input {tensor.name!r} is sent twice; send it once")
        if tensor.datatype != "BYTES":
            raise InvalidRequest(
                f"input {tensor.name!r} is {tensor.datatype}; it must be BYTES (UTF-8 text)"
            )
        if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
            raise InvalidRequest(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; send [N] (or [N, 1])"
            )
        by_name[tensor.name] = tensor
    if "text" not in by_name:
        raise InvalidRequest("the input 'text' (BYTES [N]) is required")
    texts = utf8(by_name["text"])
    if "text_pair" not in by_name:
        items: list[Item] = list(texts)
    else:
        pairs = utf8(by_name["text_pair"])
        if len(pairs) != len(texts):
            raise InvalidRequest(
                f"'text' has {len(texts)} elements and 'text_pair' {len(pairs)}; send one "
                "text_pair per text (an empty one for a row without a pair)"
            )
        items = [[t, p] if p else t for t, p in zip(texts, pairs, strict=True)]
    if not items:
        raise InvalidRequest("'text' has no elements; send at least one")
    return check_inputs(items, limits)


def utf8(tensor: InputTensor) -> list[str]:
    """A BYTES tensor's elements as text."""
    try:
        return [e.decode() for e in tensor.elements]
    except UnicodeDecodeError:
        raise InvalidRequest(f"input {tensor.name!r} has an element that is not UTF-8") from None


def chosen_outputs(head: TaskHead, task: str, requested: list[str]) -> list[str]:
    """The outputs to answer: those requested (checked against the kind's), else all."""
    names = [name for name, _ in head.kind.v2_outputs]
    for name in requested:
        if name not in names:
            raise InvalidRequest(
                f"unknown output {name!r}: model {task!r} is a {head.kind} task with "
                f"outputs {names}"
            )
    return requested or names


def output_tensors(head: TaskHead, predictions: list[dict], names: list[str]) -> list:
    """The named outputs of a task's predictions."""
    return [output_tensor(head, predictions, name) for name in names]


def output_tensor(head: TaskHead, predictions: list[dict], name: str) -> OutputTensor:
    """One output tensor of every row's prediction."""
    n = len(predictions)
    if name == "label":
        return OutputTensor(name, "BYTES", (n,), [p["label"].encode() for p in predictions])
    if name == "value":
        return OutputTensor(name, "FP32", (n,), [p["value"] for p in predictions])
    if name == "labels":
        joined = [",".join(p["labels"]).encode() for p in predictions]
        return OutputTensor(name, "BYTES", (n,), joined)
    if name == "tokens":
        return OutputTensor(name, "BYTES", (n,), [orjson.dumps(p["tokens"]) for p in predictions])
    if name == "embedding":
        width = len(predictions[0]["embedding"])
        flat = [x for p in predictions for x in p["embedding"]]
        return OutputTensor(name, "FP32", (n, width), flat)
    flat = [p["scores"][label] for p in predictions for label in head.labels]  # scores
    return OutputTensor(name, "FP32", (n, len(head.labels)), flat)
