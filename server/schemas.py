"""Request and response bodies, named by role."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _is_item(item: Any) -> bool:
    if isinstance(item, str):
        return True
    return isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)


class PredictRequest(BaseModel):
    """`{"inputs": [text | [text, text_pair], ...], "version": n?}`."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[Any] = Field(min_length=1)
    version: int | None = Field(None, ge=1)

    @field_validator("inputs")
    @classmethod
    def _items(cls, inputs: list[Any]) -> list[str | list[str]]:
        for i, item in enumerate(inputs):
            if not _is_item(item):
                shown = json.dumps(item)[:80]
                raise ValueError(
                    f"inputs[{i}] must be a string or a pair [text, text_pair] of "
                    f"two strings; got {shown}"
                )
        return inputs


class PredictResponse(BaseModel):
    """Predictions in input order, with the version that computed them."""

    task: str
    version: int
    predictions: list[dict]


class VersionPublic(BaseModel):
    """One stored version."""

    version: int
    sha256: str
    size_bytes: int
    created_at: str
    metrics: dict
    active: bool


class TaskPublic(BaseModel):
    """A task and its active version's description."""

    task: str
    active_version: int
    kind: str
    labels: list[str]
    pooling: str
    max_length: int
    metrics: dict
    versions: list[VersionPublic] | None = None


class TasksPublic(BaseModel):
    """`GET /tasks`."""

    tasks: list[TaskPublic]


class UploadPublic(BaseModel):
    """Answer to a patch upload."""

    task: str
    version: int
    sha256: str
    size_bytes: int
    created: bool
    active: bool
    kind: str
    labels: list[str]
