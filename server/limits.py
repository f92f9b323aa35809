"""What one request may hold: body sizes (each with the flag that raises it), inputs per
request and characters per text; built once from the settings and passed whole."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BodyLimit:
    """A body size limit in bytes and the setting a client is told to raise."""

    size: int
    setting: str


@dataclass(frozen=True)
class Limits:
    """Every request limit the decoders check."""

    inputs: int  # inputs per request (fan-out: tasks x inputs)
    input_chars: int  # characters per text
    request: BodyLimit  # predict-like bodies
    upload: BodyLimit  # patch files
    index: BodyLimit = BodyLimit(64 * 1024, "the repository index body limit")  # v2 index
