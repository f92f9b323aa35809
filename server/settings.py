"""Server settings: one pydantic Settings from BITPATCH_* environment variables and CLI flags."""

from __future__ import annotations

import argparse
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..patches.forwards import FORWARDS
from .auth import TokenPolicy
from .limits import BodyLimit, Limits


class Settings(BaseSettings):
    """Every knob of `bitpatch serve`; each field is `--flag-name` and `BITPATCH_FIELD_NAME`."""

    model_config = SettingsConfigDict(env_prefix="BITPATCH_", extra="ignore")

    host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    grpc_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="port of the KServe v2 gRPC service (inference.GRPCInferenceService); 0: off",
    )
    backbone: str = Field(
        "default", description="model folder or hub id ('default': the packaged all-MiniLM-L6-v2)"
    )
    store: str = Field(
        "store", description="where patches persist: a folder path or s3://BUCKET/PREFIX"
    )
    sync_interval: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="seconds between looks at the store for other processes' changes",
    )
    processes: int = Field(
        1, ge=1, le=64, description="server processes on one port, each its own engine"
    )
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    forward: str = Field(
        "auto",
        description="auto | onnxruntime | hybrid | packed | padded: onnxruntime runs the "
        "padding-free walk as one compiled graph (float32 on CPU), packed the same walk in eager "
        "PyTorch, hybrid the graph for batches of at most 128 real tokens and the eager walk "
        "above, padded the transformers model; auto takes onnxruntime where it serves (hybrid "
        "on Intel CPUs, whose MKL GEMMs win on larger batches), else packed, else padded",
    )
    forward_cache: str | None = Field(
        None,
        description="folder where compiled forwards are cached between starts (default: "
        "$XDG_CACHE_HOME/bitpatch/forwards or ~/.cache/bitpatch/forwards)",
    )
    max_batch_size: int = Field(32, ge=1, le=4096, description="rows per forward at most")
    max_wait_ms: float = Field(5.0, ge=0, description="how long a batch waits to fill")
    max_queue: int = Field(2048, ge=1, description="rows waiting at most; more answers 503")
    max_queue_per_task: int = Field(
        0,
        ge=0,
        description="rows one task may have waiting; more answers 429 with Retry-After for "
        "that task only (0: only --max-queue bounds it)",
    )
    max_queue_ms: float = Field(
        0,
        ge=0,
        description="default deadline of a request to start its forward (X-Bitpatch-Timeout-Ms "
        "or a gRPC deadline sets its own); one that cannot start in time gets 503 before any "
        "work (0: none)",
    )
    batching: str = Field(
        "fair",
        description="fair: each forward's rows are shared among the flows waiting, a scoped "
        "token's tenant by its weight, else each task equally (a flooding tenant or task cannot "
        "delay the others); arrival: first come, first served, grouping rows of similar length",
    )
    max_inputs: int = Field(64, ge=1, description="inputs per predict request at most")
    max_input_chars: int = Field(
        8192, ge=16, description="characters per text at most (422 naming the input beyond)"
    )
    max_request_bytes: int | None = Field(
        None,
        ge=1024,
        description="predict body size limit, 413 beyond (default: 16 KiB per allowed input "
        "plus 64 KiB)",
    )
    max_upload_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="patch upload limit")
    keep_versions: int | None = Field(
        None,
        ge=1,
        description="stored versions kept per task; older ones are deleted after "
        "an upload, never the active one (default: keep all)",
    )
    max_resident: int = Field(
        0,
        ge=0,
        description="active task versions kept decoded in memory (~0.1 MB each on the default "
        "backbone); beyond it the least recently used leave memory and load again on their "
        "next request (~2 ms); 0: every task used since the start",
    )
    metrics_tasks: int = Field(
        100,
        ge=0,
        le=10_000,
        description="tasks with their own label in /metrics: the busiest by recent requests; "
        'the others are summed under task="_other" (GET /stats/tasks has every task)',
    )
    admin_token: str | None = Field(
        None, description="Bearer token for uploads, activation and deletion (and every route)"
    )
    predict_token: str | None = Field(
        None, description="Bearer token for predict and reads (GET /tasks*, downloads)"
    )
    tokens_file: str | None = Field(
        None,
        description="a YAML or JSON list of scoped tokens {name, sha256, role: predict|read|"
        "admin, tasks: [pattern, ...], rows_per_second?, burst?, weight?}: each acts only on the "
        "tasks its patterns match (weight: its tenant's share in fair batching); re-read when it "
        "changes",
    )
    demo_patches: bool = Field(True, description="seed an empty store with the demo patches")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="forwards run in parallel, each on threads/workers cores "
        "(default: 2 on CPU, 1 on GPU)",
    )
    widen_lone_forwards: bool = Field(
        True,
        description="a forward of at most 4 rows that runs alone (nothing else queued, the "
        "other workers idle) uses every worker's CPU threads, so a request at low load gets "
        "all cores",
    )
    express_rows: int | None = Field(
        None,
        ge=0,
        le=64,
        description="on CPU, while some flow has more than a forward's rows queued and "
        "running, the rows of light flows (at most this many queued and as many running) go "
        "first, alone, in short forwards that a busy worker runs between two halves of a "
        "layer (or, for a forward without layer breaks, one more thread): a quiet tenant "
        "beside a flood waits for half a layer instead of whole forwards, for part of the "
        "flood's throughput (docs/TENANCY.md; default: 8 where forwards have layer breaks, "
        "the packed and hybrid ones, else none; 0: off)",
    )
    cudnn_attention: bool = Field(
        False,
        description="on CUDA, let attention use cuDNN kernels, which build a graph per new "
        "batch shape (off: PyTorch's flash / memory-efficient kernels)",
    )
    kernel_cache: int = Field(
        64,
        ge=0,
        description="CPU kernels kept per oneDNN/ideep cache (one per input shape, each up to "
        "~1.5 MB); bounds the memory that varying batch shapes add (1024 each by default)",
    )
    gc_freeze: bool = Field(
        True,
        description="after loading, move every object into Python's permanent GC generation, "
        "so full collections under traffic skip the ~0.4M objects of torch, transformers and "
        "the app (each one held the interpreter lock for ~0.25 s)",
    )
    gil_switch_ms: float = Field(
        0.2,
        gt=0,
        le=100,
        description="Python's thread switch interval (ms): how long the event loop may hold "
        "the interpreter lock while a forward thread waits for it between two torch ops. An "
        "eager forward takes the lock back after each of its ~200 ops, so under a storm of "
        "requests Python's 5 ms default let the event loop stall forwards ~9x (docs/TENANCY.md)",
    )
    log_level: str = Field("info", description="debug | info | warning | error")

    @cached_property
    def limits(self) -> Limits:
        """The request limits in force, as one value (the predict body limit follows
        --max-inputs unless --max-request-bytes is set)."""
        request_bytes = self.max_request_bytes or self.max_inputs * 16 * 1024 + 64 * 1024
        return Limits(
            self.max_inputs,
            self.max_input_chars,
            BodyLimit(request_bytes, "--max-request-bytes"),
            BodyLimit(self.max_upload_bytes, "--max-upload-bytes"),
        )

    @cached_property
    def tokens(self) -> TokenPolicy:
        """The token policy in force (the tokens file read now: ValueError if it is bad)."""
        from .tenants import TokensFile

        scoped = TokensFile(Path(self.tokens_file)) if self.tokens_file else None
        return TokenPolicy(self.admin_token, self.predict_token, scoped)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        allowed = ("auto", "float32", "bfloat16", "float16")
        if value not in allowed:
            raise ValueError(f"dtype must be one of {allowed}, got {value!r}")
        return value

    @field_validator("batching")
    @classmethod
    def _batching(cls, value: str) -> str:
        if value not in ("fair", "arrival"):
            raise ValueError(f"batching must be 'fair' or 'arrival', got {value!r}")
        return value

    @field_validator("forward")
    @classmethod
    def _forward(cls, value: str) -> str:
        if value not in FORWARDS:
            raise ValueError(f"forward must be one of {FORWARDS}, got {value!r}")
        return value

    @field_validator("admin_token", "predict_token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 8:
            raise ValueError("tokens must be at least 8 characters; use a long random string")
        return value or None


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; unset flags fall back to the environment, then defaults."""
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"BITPATCH_{name.upper()}"
        if field.annotation is bool:
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{field.description} (env {env})",
            )
        else:
            shown = "unset" if field.default is None else repr(field.default)
            parser.add_argument(
                flag, default=None, help=f"{field.description} (env {env}; default {shown})"
            )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags given on the command line override the environment."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    return Settings(**given)
