"""The patch store: one interface (`base.PatchStore`) and two backends, a folder and any
S3-compatible object store; `open_store` picks the backend a `--store` value names."""

from __future__ import annotations

from pathlib import Path

from .base import PatchStore
from .folder import FolderStore


def open_store(location: str | Path) -> PatchStore:
    """The store a `--store` value names: `s3://BUCKET/PREFIX` or a folder path."""
    text = str(location)
    if text.startswith("s3://"):
        from .s3 import S3Store  # boto3 loads only for an S3 store

        return S3Store(text)
    return FolderStore(Path(text))
