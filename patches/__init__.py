"""Shared by server and trainer: the bitpatch/1 patch format and the multi-task engine."""

from .backbone import Backbone, BackboneSpec, backbone_from_model, load_backbone
from .engine import MultiTaskEngine, TaskHead
from .patch_file import FORMAT, PatchError, PatchFile, read_patch

__all__ = [
    "FORMAT",
    "Backbone",
    "BackboneSpec",
    "MultiTaskEngine",
    "PatchError",
    "PatchFile",
    "TaskHead",
    "backbone_from_model",
    "load_backbone",
    "read_patch",
]
