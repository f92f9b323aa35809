"""`bitpatch push`, `export` and `import`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_push_parser(sub) -> None:
    """`bitpatch push FILE --url URL [--task T] [--token T]`."""
    p = sub.add_parser("push", help="upload a patch file to a running server")
    p.add_argument("file", type=Path)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--task", default=None, help="default: the task named in the patch")
    p.add_argument("--token", default=None, help="admin token (or BITPATCH_ADMIN_TOKEN)")
    p.set_defaults(func=run_push)


def run_push(args: argparse.Namespace) -> int:
    """Upload and print the server's answer."""
    import os

    from bitpatch.client import BitpatchError, Client

    token = args.token or os.environ.get("BITPATCH_ADMIN_TOKEN")
    try:
        reply = Client(args.url, token=token).push(args.file, task=args.task)
    except BitpatchError as err:
        print(f"bitpatch push: {err}")
        return 1
    print(json.dumps(reply))
    return 0


def add_export_parser(sub) -> None:
    """`bitpatch export PATCH --out DIR`."""
    p = sub.add_parser("export", help="write a patch as a transformers classification folder")
    p.add_argument("patch", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--backbone", default="default")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Patch + backbone -> AutoModelForSequenceClassification folder."""
    from bitpatch.patches.backbone import load_backbone
    from bitpatch.patches.hf_interop import export_patch
    from bitpatch.patches.patch_file import read_patch

    backbone = load_backbone(args.backbone, dtype="float32", device="cpu")
    model = export_patch(backbone, read_patch(args.patch, backbone.spec))
    model.save_pretrained(args.out)
    backbone.tokenizer.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0


def add_import_parser(sub) -> None:
    """`bitpatch import HF_DIR --out PATCH`."""
    p = sub.add_parser("import", help="extract a patch from a BitFit-tuned classification model")
    p.add_argument("model_dir")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--backbone", default="default")
    p.add_argument("--max-length", type=int, default=128)
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    """HF classification folder -> bitpatch/1 file."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from bitpatch.patches.backbone import load_backbone
    from bitpatch.patches.hf_interop import import_model

    backbone = load_backbone(args.backbone, dtype="float32", device="cpu")
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, dtype=torch.float32)
    patch = import_model(backbone, model, args.task, args.max_length)
    patch.save(args.out)
    print(f"wrote {args.out} ({len(patch.biases)} bias tensors)")
    return 0
