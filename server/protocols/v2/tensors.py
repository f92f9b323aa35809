"""Tensors of the Open Inference Protocol (KServe v2) over REST: JSON `data`, and the binary
tensor data extension (a JSON header of `Inference-Header-Content-Length` bytes, then each
binary tensor's bytes in order; a BYTES element is a 4-byte little-endian length + its bytes).
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import orjson

from ...errors import BodyTooLarge, InvalidRequest
from ...limits import BodyLimit

LENGTH = struct.Struct("<I")
WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
ITEM_BYTES = {"FP32": 4, "FP64": 8, "INT64": 8, "INT32": 4, "BOOL": 1}


@dataclass(frozen=True)
class InputTensor:
    """One input of an infer request; `elements` flat in row-major order (bytes for BYTES)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: list


@dataclass(frozen=True)
class OutputTensor:
    """One output of an infer response; `elements` flat (bytes for BYTES, floats for FP32)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    elements: list

    def to_bytes(self) -> bytes:
        """Its elements as the protocol's raw bytes."""
        if self.datatype == "BYTES":
            return pack_bytes(self.elements)
        return np.asarray(self.elements, dtype="<f4").tobytes()

    def to_json_data(self) -> list:
        """Its elements as JSON `data` (BYTES as UTF-8 strings)."""
        if self.datatype == "BYTES":
            return [e.decode() for e in self.elements]
        return self.elements


def pack_bytes(elements: list[bytes]) -> bytes:
    """BYTES elements as raw tensor data: each a 4-byte little-endian length + its bytes."""
    return b"".join(LENGTH.pack(len(e)) + e for e in elements)


def unpack_bytes(raw: bytes, name: str) -> list[bytes]:
    """Raw BYTES tensor data back into its elements."""
    elements, offset = [], 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidRequest(
                f"input {name!r}: its raw BYTES data ends inside an element's 4-byte length; "
                "each element is a 4-byte little-endian length followed by that many bytes"
            )
        (size,) = LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidRequest(
                f"input {name!r}: an element declares {size} bytes but only "
                f"{len(raw) - offset} remain in its raw BYTES data"
            )
        elements.append(bytes(view[offset : offset + size]))
        offset += size
    return elements


def decompress(body: bytes, encoding: str | None, limit: BodyLimit) -> bytes:
    """The body under its `Content-Encoding` (identity, gzip or deflate), within `limit` once
    inflated."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    wbits = WBITS.get(encoding.strip().lower())
    if wbits is None:
        raise InvalidRequest(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or identity"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit.size + 1)
    except zlib.error as err:
        raise InvalidRequest(f"the body is not valid {encoding} data ({err})") from None
    if len(data) > limit.size:
        raise BodyTooLarge(f"the body inflates past {limit.size} bytes ({limit.setting})")
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[object, bytes]:
    """The JSON header (parsed) and the binary data after it."""
    if header_length is None:
        return parse_header(body), b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise InvalidRequest(
            f"Inference-Header-Content-Length is {header_length!r}, but the body has "
            f"{len(body)} bytes; it must be the byte length of the JSON header at the body's "
            "start"
        )
    size = int(header_length)
    return parse_header(body[:size]), body[size:]


def parse_header(data: bytes) -> object:
    """The JSON part of a request."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise InvalidRequest(
            f"the inference request header is not valid UTF-8 JSON ({err}); send "
            '{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [N], "data": [...]}]}'
        ) from None


def read_inputs(inputs: object, binary: bytes) -> list[InputTensor]:
    """Every input tensor of a REST request, its data from JSON or the binary part."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(
            'inputs must be a non-empty list of tensors, e.g. [{"name": "text", '
            '"datatype": "BYTES", "shape": [1], "data": ["some text"]}]'
        )
    tensors, offset = [], 0
    for i, spec in enumerate(inputs):
        name, datatype, shape = tensor_header(spec, f"inputs[{i}]")
        size = binary_size(spec.get("parameters"), name)
        if size is None:
            elements = json_elements(spec, name, datatype)
        else:
            if offset + size > len(binary):
                raise InvalidRequest(
                    f"input {name!r} declares binary_data_size {size}, but only "
                    f"{len(binary) - offset} bytes of binary data remain after the header"
                )
            elements = raw_elements(binary[offset : offset + size], name, datatype)
            offset += size
        check_count(name, shape, len(elements))
        tensors.append(InputTensor(name, datatype, shape, elements))
    if offset != len(binary):
        raise InvalidRequest(
            f"{len(binary) - offset} bytes of binary data follow the last input's; the "
            "binary_data_size of the inputs must add up to the bytes after the header"
        )
    return tensors


def tensor_header(spec: object, where: str) -> tuple[str, str, tuple[int, ...]]:
    """A tensor's name, datatype and shape, checked."""
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where} must be an object with name, datatype, shape and data")
    name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str):
        raise InvalidRequest(f"{where} needs a string name and datatype (e.g. BYTES)")
    valid = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not valid:
        raise InvalidRequest(f"input {name!r}: shape must be a list of integers >= 0")
    return name, datatype, tuple(shape)


def binary_size(parameters: object, name: str) -> int | None:
    """`binary_data_size` of a tensor, if its data is in the binary part."""
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InvalidRequest(f"input {name!r}: parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidRequest(f"input {name!r}: binary_data_size must be an integer >= 0")
    return size


def json_elements(spec: dict, name: str, datatype: str) -> list:
    """JSON `data` flattened (the protocol allows nested lists in row-major order)."""
    if "data" not in spec:
        raise InvalidRequest(
            f"input {name!r} has neither data nor parameters.binary_data_size; send its "
            "elements in data (or as binary data)"
        )
    flat: list = []
    stack = [spec["data"]]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    if datatype == "BYTES":
        if not all(isinstance(e, str) for e in flat):
            raise InvalidRequest(f"input {name!r}: BYTES data in JSON must be strings")
        return [e.encode() for e in flat]
    return flat


def raw_elements(raw: bytes, name: str, datatype: str) -> list:
    """Binary tensor data into elements."""
    if datatype == "BYTES":
        return unpack_bytes(raw, name)
    width = ITEM_BYTES.get(datatype)
    if width is None or len(raw) % width:
        raise InvalidRequest(f"input {name!r}: {len(raw)} bytes are not {datatype} elements")
    dtype = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4", "BOOL": "?"}
    return np.frombuffer(raw, dtype=dtype[datatype]).tolist()


def check_count(name: str, shape: tuple[int, ...], count: int) -> None:
    """The elements sent match the declared shape."""
    if math.prod(shape) != count:
        raise InvalidRequest(
            f"input {name!r} has shape {list(shape)} ({math.prod(shape)} elements) but "
            f"{count} elements were sent"
        )


def encode_response(header: dict, tensors: list[OutputTensor], binary: set[str]) -> tuple:
    """The response body and its `Inference-Header-Content-Length` (None: all JSON)."""
    blobs, outputs = [], []
    for tensor in tensors:
        entry: dict = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.name in binary:
            raw = tensor.to_bytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor.to_json_data()
        outputs.append(entry)
    head = orjson.dumps({**header, "outputs": outputs})
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
