"""Decode stage of a v2 REST infer request: its JSON header and binary part into a checked
request (inputs, requested outputs, which outputs go back as binary data)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InvalidRequest
from .model import refuse_classification
from .tensors import InputTensor, read_inputs

FIELDS = {"id", "parameters", "inputs", "outputs"}
SHAPE = (
    '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [N], "data": [...]}], '
    '"outputs": [{"name": ...}] (optional)}'
)


@dataclass(frozen=True)
class InferRequest:
    """An infer request: its id, input tensors and requested outputs."""

    request_id: str
    inputs: list[InputTensor]
    output_names: list[str]  # empty: every output of the task's kind
    binary_by_output: dict[str, bool]  # an output's own `binary_data` parameter
    binary_default: bool  # the request's `binary_data_output` parameter

    def binary_outputs(self, names: list[str]) -> set[str]:
        """The outputs answered as binary tensor data."""
        return {n for n in names if self.binary_by_output.get(n, self.binary_default)}


def decode_infer_request(header: object, binary: bytes) -> InferRequest:
    """The checked request of a JSON header and the binary data after it."""
    if not isinstance(header, dict):
        raise InvalidRequest(f"the inference request must be a JSON object: {SHAPE}")
    extra = sorted(set(header) - FIELDS)
    if extra:
        raise InvalidRequest(f"unknown field(s) {extra}; an inference request is {SHAPE}")
    request_id = header.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidRequest("id must be a string")
    parameters = parameters_of(header.get("parameters"), "the request")
    binary_default = flag(parameters, "binary_data_output", "the request")
    names, binary_by_output = requested_outputs(header.get("outputs"))
    inputs = read_inputs(header.get("inputs"), binary)
    return InferRequest(request_id, inputs, names, binary_by_output, binary_default)


def requested_outputs(outputs: object) -> tuple[list[str], dict[str, bool]]:
    """Names of the requested outputs and their binary_data parameters."""
    if outputs is None:
        return [], {}
    if not isinstance(outputs, list):
        raise InvalidRequest('outputs must be a list of {"name": ...} objects')
    names: list[str] = []
    binary: dict[str, bool] = {}
    for i, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InvalidRequest(f'outputs[{i}] must be an object with a string "name"')
        name = spec["name"]
        parameters = parameters_of(spec.get("parameters"), f"output {name!r}")
        refuse_classification(name, parameters)
        if "binary_data" in parameters:
            binary[name] = flag(parameters, "binary_data", f"output {name!r}")
        names.append(name)
    return names, binary


def parameters_of(parameters: object, where: str) -> dict:
    """A parameters object (absent: empty)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidRequest(f"the parameters of {where} must be an object")
    return parameters


def flag(parameters: dict, name: str, where: str) -> bool:
    """A boolean parameter (absent: False)."""
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"parameter {name!r} of {where} must be true or false")
    return value
