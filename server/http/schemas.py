"""Request and response bodies, named by role."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

Pair = Annotated[list[str], Field(min_length=2, max_length=2)]


class PredictRequest(BaseModel):
    """`{"inputs": [text | [text, text_pair], ...], "version": n?}` (the route checks it by
    hand in server/protocols/native/request.py; this model documents it in the OpenAPI page)."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str | Pair] = Field(min_length=1)
    version: StrictInt | None = Field(None, ge=1)


class PredictResponse(BaseModel):
    """Predictions in input order, with the version that computed them."""

    task: str
    version: int
    predictions: list[dict]


class FanoutRequest(BaseModel):
    """`{"tasks": [task, ...], "inputs": [...]}`: each input through every task (checked by
    hand in server/protocols/native/request.py; this model documents it)."""

    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(min_length=1)
    inputs: list[str | Pair] = Field(min_length=1)


class FanoutResponse(BaseModel):
    """Each task's predict response, by task name."""

    results: dict[str, PredictResponse]


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
    inputs: str
    metrics: dict
    created_at: str = ""
    size_bytes: int = 0
    thresholds: list[float] | None = None  # multi_label: each label's decision threshold
    trainer: dict | None = None  # how the active version was trained (the patch's metadata)
    versions: list[VersionPublic] | None = None


class TasksPublic(BaseModel):
    """`GET /tasks`: one page of tasks in name order; `next` is the `after` of the next page
    (absent on the last), `total` counts the tasks that match the filters."""

    tasks: list[TaskPublic]
    total: int
    next: str | None = None


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


class V2Tensor(BaseModel):
    """An input tensor of a v2 infer request (JSON data; binary data goes after the header)."""

    name: str = Field(examples=["text"])
    datatype: str = Field(examples=["BYTES"])
    shape: list[int]
    parameters: dict | None = None
    data: list | None = None


class V2RequestedOutput(BaseModel):
    """An output a v2 request asks for."""

    name: str
    parameters: dict | None = None


class V2InferRequest(BaseModel):
    """`POST /v2/models/{task}/infer` (checked by hand in server/protocols/v2/request.py; this model
    documents it)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class EmbeddingsRequest(BaseModel):
    """`POST /v1/embeddings`, as OpenAI's API takes it (checked by hand in
    server/protocols/openai/embeddings.py; this model documents it)."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(examples=["embedding"])
    input: str | list[str]
    encoding_format: str | None = Field(None, examples=["float", "base64"])
    dimensions: int | None = None
    user: str | None = None


class SplitBody(BaseModel):
    """A version and the percent of requests it takes (canary) or shadows (shadow)."""

    model_config = ConfigDict(extra="forbid")
    version: StrictInt = Field(ge=1)
    percent: float = Field(gt=0, le=100)


class GuardBody(BaseModel):
    """End the rollout when the candidate falls more than max_drop behind the active version."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(description="accuracy (from evaluate calls) or agreement (shadow rows)")
    min_rows: StrictInt = Field(ge=1)
    max_drop: float = Field(ge=0, le=100)


class RolloutRequest(BaseModel):
    """`PUT /tasks/{task}/rollout` (checked by hand in server/core/rollouts.py; this model
    documents it): a canary, a shadow or both, and an optional guard."""

    model_config = ConfigDict(extra="forbid")
    canary: SplitBody | None = None
    shadow: SplitBody | None = None
    guard: GuardBody | None = None


class EvaluateRequest(BaseModel):
    """`POST /tasks/{task}/evaluate`: inputs and their labels as the task's kind takes them (a
    label name, a number, a list of labels, a tag per word)."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[str | Pair] = Field(min_length=1)
    labels: list = Field(min_length=1)
