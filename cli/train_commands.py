"""`bitpatch train`, `eval` and `inspect`: argument parsing and dispatch to the trainer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """Where examples come from: a GLUE folder, user files, or a datasets name."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--glue",
        choices=["sst2", "cola", "mrpc", "rte", "stsb", "qnli", "mnli", "qqp", "wnli"],
        help="GLUE task (with --data DIR)",
    )
    group.add_argument("--data", type=Path, help="GLUE task folder (train.tsv, dev.tsv)")
    group.add_argument(
        "--file",
        type=Path,
        help="user training file: .csv, .tsv or .jsonl; .conll (token<TAB>tag) for tagging",
    )
    group.add_argument("--dev-file", type=Path, help="user dev file (default: --dev-split)")
    group.add_argument("--dev-split", type=float, default=0.1, help="dev fraction of --file")
    group.add_argument("--text-column", default="text", help="column of the text (default text)")
    group.add_argument(
        "--pair-column", default=None, help="column of the second text, for pair tasks"
    )
    group.add_argument("--label-column", default="label", help="column of the label or score")
    group.add_argument(
        "--label-sep",
        default=",",
        help="multi_label: the separator of several labels in one --label-column cell",
    )
    group.add_argument(
        "--label-columns",
        default=None,
        help="multi_label: comma-separated 0/1 columns, one per label (instead of --label-column)",
    )
    group.add_argument(
        "--kind",
        choices=[
            "classification",
            "regression",
            "multi_label",
            "token_classification",
            "embedding",
        ],
        default=None,
        help="override the kind inferred from the labels (multi_label: BCE, sigmoid scores; "
        "token_classification: a CoNLL --file, one tag per word; embedding: text pairs with "
        "an optional 0-1 or 0-5 score, e.g. --glue stsb)",
    )
    group.add_argument("--hf-dataset", help="a Hugging Face datasets name (needs the hub)")
    group.add_argument("--hf-config", default=None, help="the datasets configuration name")
    group.add_argument(
        "--hf-data-files",
        default=None,
        help="for builders like json/csv: train=FILE,validation=FILE",
    )


def load_data(args: argparse.Namespace):
    """The TaskData the arguments point at, or a clear error."""
    from bitpatch.trainer.data import Columns, DataError, load_glue, load_hf_dataset, load_user_data
    from bitpatch.trainer.kinds import training_kind

    label_columns = tuple(c.strip() for c in (args.label_columns or "").split(",") if c.strip())
    columns = Columns(
        args.text_column, args.pair_column, args.label_column, args.label_sep, label_columns
    )
    if args.glue and not args.data:
        raise DataError("--glue needs --data DIR (the task's folder with train.tsv, dev.tsv)")
    kind = training_kind(args.kind) if args.kind else None
    if kind and kind.pairwise:
        return _load_pairs(args, columns)
    if (kind and kind.per_token) or (args.file and args.file.suffix == ".conll"):
        return _load_tagged(args)
    if args.glue:
        return load_glue(args.glue, args.data)
    if args.file:
        return load_user_data(args.file, columns, args.dev_file, args.dev_split, args.kind)
    if args.hf_dataset:
        return load_hf_dataset(
            args.hf_dataset, args.hf_config, columns, args.kind, data_files=_data_files(args)
        )
    raise DataError("no data: pass --glue T --data DIR, --file F, or --hf-dataset NAME")


def _data_files(args: argparse.Namespace) -> dict[str, str] | None:
    if not args.hf_data_files:
        return None
    return dict(p.split("=", 1) for p in args.hf_data_files.split(","))


def _load_pairs(args: argparse.Namespace, columns):
    """Embedding data: GLUE STS-B, a user file of pairs, or a datasets pair set."""
    from bitpatch.trainer.data import DataError, load_hf_dataset
    from bitpatch.trainer.pairs import embedding_data, load_glue_pairs, load_pairs

    if args.glue:
        return load_glue_pairs(args.glue, args.data)
    if args.file:
        return load_pairs(args.file, columns, args.dev_file, args.dev_split)
    if args.hf_dataset:
        loaded = load_hf_dataset(
            args.hf_dataset, args.hf_config, columns, "regression", data_files=_data_files(args)
        )
        return embedding_data(loaded)
    raise DataError("no pairs: pass --glue stsb --data DIR, --file F, or --hf-dataset NAME")


def _load_tagged(args: argparse.Namespace):
    """Token-tagging data: a CoNLL file or a datasets tagging set (e.g. conll2003)."""
    from bitpatch.trainer.conll import load_conll, load_hf_tagging
    from bitpatch.trainer.data import DataError

    if args.file:
        return load_conll(args.file, args.dev_file, args.dev_split)
    if args.hf_dataset:
        words = "tokens" if args.text_column == "text" else args.text_column
        tags = "ner_tags" if args.label_column == "label" else args.label_column
        return load_hf_tagging(args.hf_dataset, args.hf_config, words, tags, _data_files(args))
    raise DataError("no tagged data: pass --file F.conll or --hf-dataset NAME (e.g. conll2003)")


def add_train_parser(sub) -> None:
    """`bitpatch train`."""
    p = sub.add_parser("train", help="train a bias patch (BitFit) or a baseline")
    add_data_args(p)
    p.add_argument(
        "--out", type=Path, required=True, help="patch file (or folder for --method full)"
    )
    p.add_argument("--task", help="task name in the patch (default: the data's name)")
    p.add_argument(
        "--backbone", default="default", help="model folder or hub id (default: all-MiniLM-L6-v2)"
    )
    p.add_argument(
        "--method",
        choices=["bitfit", "frozen", "full"],
        default="bitfit",
        help="bitfit: biases + head; frozen: head only; full: every weight (an HF folder)",
    )
    p.add_argument(
        "--bias-terms",
        default=None,
        help="components, e.g. query,intermediate, or preset bq+bm2 (default: all)",
    )
    p.add_argument(
        "--pooling",
        choices=["mean", "cls", "pooler"],
        default="mean",
        help="how a text becomes one vector for the head (export needs pooler)",
    )
    p.add_argument("--max-length", type=int, default=128, help="tokens per input at most")
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (bias), 2e-5 (full)")
    p.add_argument(
        "--lr-grid",
        default=None,
        help="comma-separated rates to search, or 'paper' for 1e-4,4e-4,7e-4,1e-3",
    )
    p.add_argument("--epochs", type=float, default=5.0, help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=16, help="examples per optimizer step")
    p.add_argument("--seed", type=int, default=0, help="random seed (data order, head init)")
    p.add_argument(
        "--max-train-examples", type=int, default=None, help="use only the first N examples"
    )
    p.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="train on this seeded, stratified share of the training set (e.g. 0.1)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="save resumable epoch checkpoints next to --out and go on from the last one",
    )
    p.add_argument(
        "--metrics-out",
        type=Path,
        default=None,
        help="also write the run's summary (metrics, time, command) as JSON here",
    )
    p.add_argument("--push", default=None, help="server URL to upload the patch to")
    p.add_argument(
        "--token", default=None, help="admin token for --push (default: $BITPATCH_ADMIN_TOKEN)"
    )
    p.set_defaults(func=run_train)


def _lr_grid(spec: str | None) -> list[float]:
    from bitpatch.trainer.train import PAPER_LR_GRID

    if not spec:
        return []
    return list(PAPER_LR_GRID) if spec == "paper" else [float(x) for x in spec.split(",")]


def run_train(args: argparse.Namespace) -> int:
    """Train, write the patch, optionally push it."""
    from bitpatch.trainer.train import TrainSettings, train, training_hardware

    data = load_data(args)
    settings = TrainSettings(
        out=args.out,
        task=args.task or data.name,
        backbone=args.backbone,
        method=args.method,
        bias_terms=args.bias_terms,
        pooling=args.pooling,
        max_length=args.max_length,
        learning_rate=args.lr,
        lr_grid=_lr_grid(args.lr_grid),
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        max_train_examples=args.max_train_examples,
        train_fraction=args.train_fraction,
        resume=args.resume,
    )
    result = train(settings, data)
    summary = {
        "task": data.name,
        "kind": data.kind,
        "method": args.method,
        "bias_terms": args.bias_terms or "all",
        "seed": args.seed,
        "train_fraction": args.train_fraction,
        "epochs": args.epochs,
        "pooling": args.pooling,
        "out": str(result.out),
        "metrics": result.metrics,
        "seconds": round(result.seconds, 1),
        "resumed_from": result.resumed_from,
        "learning_rate": result.learning_rate,
        "trainable_percent": round(result.trainable_percent, 4),
        "command": "bitpatch " + " ".join(sys.argv[1:]),
        "hardware": training_hardware(),
    }
    if result.resumed_from:
        summary["seconds_valid"] = False
        summary["seconds_note"] = f"resumed from {result.resumed_from}: seconds cover the last part"
    print(json.dumps(summary))
    if args.metrics_out:
        args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.push:
        from bitpatch.client import Client, admin_token

        reply = Client(args.push, token=admin_token(args.token)).push(result.out, settings.task)
        print(json.dumps(reply))
    return 0


def add_eval_parser(sub) -> None:
    """`bitpatch eval`."""
    p = sub.add_parser("eval", help="score a patch on dev data through the serving engine")
    p.add_argument("patch", type=Path, help="the patch file to score")
    add_data_args(p)
    p.add_argument("--backbone", default="default", help="the patch's backbone (folder or hub id)")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Print the patch's dev metrics as JSON."""
    from bitpatch.patches.patch_file import read_patch
    from bitpatch.trainer.evaluate import evaluate_patch

    patch = read_patch(args.patch)
    data = load_data(args)
    metrics = evaluate_patch(patch, data, args.backbone, dtype=args.dtype, device=args.device)
    print(json.dumps({"task": patch.task, "metrics": metrics, "recorded": patch.metrics}))
    return 0


def add_inspect_parser(sub) -> None:
    """`bitpatch inspect`."""
    p = sub.add_parser("inspect", help="how much each bias moved, per layer and component")
    p.add_argument("patch", type=Path, help="the patch file to inspect")
    p.add_argument("--backbone", default="default", help="the patch's backbone (folder or hub id)")
    p.add_argument("--plot", type=Path, default=None, help="write a heatmap PNG here")
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the change table; optionally plot it."""
    from bitpatch.trainer.inspect import bias_changes, format_table, plot_heatmap

    changes = bias_changes(args.patch, args.backbone)
    print(format_table(changes))
    if args.plot:
        plot_heatmap(changes, args.plot)
        print(f"heatmap written to {args.plot}")
    return 0
