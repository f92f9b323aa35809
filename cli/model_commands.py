"""`bitpatch push`, `export` and `import`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_push_parser(sub) -> None:
    """`bitpatch push FILE --url URL [--task T] [--token T] [--candidate]`."""
    p = sub.add_parser("push", help="upload a patch file to a running server")
    p.add_argument("file", type=Path, help="the patch file (.safetensors) to upload")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    p.add_argument("--task", default=None, help="task to upload to (default: the patch's own)")
    p.add_argument(
        "--token", default=None, help="admin token (default: $BITPATCH_ADMIN_TOKEN, if set)"
    )
    p.add_argument(
        "--candidate",
        action="store_true",
        help="store the version without making it active (for `bitpatch rollout`)",
    )
    p.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    """Upload and print the server's answer."""
    from bitpatch.client import Client, admin_token

    client = Client(args.url, token=admin_token(args.token))
    print(json.dumps(client.push(args.file, args.task, activate=not args.candidate)))
    return 0


def add_export_parser(sub) -> None:
    """`bitpatch export PATCH --out DIR`."""
    p = sub.add_parser(
        "export",
        help="write a patch as a standard folder: transformers sequence or token "
        "classification, or sentence-transformers for an embedding",
    )
    p.add_argument("patch", type=Path, help="the patch file to export")
    p.add_argument("--out", type=Path, required=True, help="folder to write the model into")
    p.add_argument("--backbone", default="default", help="the patch's backbone (folder or hub id)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Patch + backbone -> the standard folder of the patch's kind."""
    from bitpatch.patches.backbone import load_backbone
    from bitpatch.patches.hf_interop import export_folder
    from bitpatch.patches.patch_file import read_patch

    backbone = load_backbone(args.backbone, dtype="float32", device="cpu")
    export_folder(backbone, read_patch(args.patch, backbone.spec), args.out)
    print(f"wrote {args.out}")
    return 0


def add_import_parser(sub) -> None:
    """`bitpatch import HF_DIR --out PATCH`."""
    p = sub.add_parser("import", help="extract a patch from a BitFit-tuned classification model")
    p.add_argument("model_dir", help="a transformers sequence- or token-classification folder")
    p.add_argument("--out", type=Path, required=True, help="patch file to write")
    p.add_argument(
        "--task",
        default=None,
        help="task name (default: the name `bitpatch export` recorded, else the folder's name)",
    )
    p.add_argument("--backbone", default="default", help="the model's backbone (folder or hub id)")
    p.add_argument(
        "--max-length", type=int, default=None, help="max tokens (default: recorded, else 128)"
    )
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """HF classification folder -> bitpatch/1 file."""
    from bitpatch.patches.backbone import load_backbone
    from bitpatch.patches.hf_interop import import_model, imported_task_name, load_for_import

    backbone = load_backbone(args.backbone, dtype="float32", device="cpu")
    model = load_for_import(args.model_dir)
    task = args.task or imported_task_name(model.config, args.model_dir)
    max_length = args.max_length or getattr(model.config, "bitpatch_max_length", 128)
    patch = import_model(backbone, model, task, max_length)
    patch.save(args.out)
    print(f"wrote {args.out} ({len(patch.biases)} bias tensors)")
    return 0
