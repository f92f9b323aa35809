"""`bitpatch push`, `export` and `import`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_push_parser(sub) -> None:
    """`bitpatch push FILE_OR_DIR... --url URL [--task T] [--token T] [--candidate] [--jobs N]`."""
    p = sub.add_parser("push", help="upload patch files to a running server")
    p.add_argument(
        "files",
        type=Path,
        nargs="+",
        metavar="FILE_OR_DIR",
        help="patch files (.safetensors), or folders: every *.safetensors under them; one file "
        "prints the server's answer, more print a summary (created / unchanged / refused)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=8,
        help="uploads in flight at once when pushing many files (default 8)",
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    p.add_argument(
        "--task", default=None, help="task to upload one file to (default: the patch's own)"
    )
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
    """One file: upload it and print the server's answer. Many: push them all concurrently,
    print the summary; exit 1 if any was refused."""
    from bitpatch.client import Client, admin_token

    from .bulk_push import patch_files

    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    files = patch_files(args.files)
    if len(args.files) == 1 and args.files[0].is_file():
        client = Client(args.url, token=admin_token(args.token))
        print(json.dumps(client.push(files[0], args.task, activate=not args.candidate)))
        return 0
    if args.task is not None:
        raise ValueError("--task names the task of one file; many files go to their own tasks")
    return push_many(args, files, admin_token(args.token))


def push_many(args: argparse.Namespace, files: list[Path], token: str | None) -> int:
    """The bulk push: a progress bar on stderr, the summary as JSON on stdout."""
    from tqdm import tqdm

    from .bulk_push import BulkPusher

    pusher = BulkPusher(args.url, token, args.jobs, activate=not args.candidate)
    try:
        with tqdm(total=len(files), unit="patch", desc="push", file=sys.stderr) as bar:
            summary = pusher.push_all(files, bar)
    finally:
        pusher.close()
    print(json.dumps(summary.as_json()))
    return 1 if summary.refused else 0


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
