"""`bitpatch train`: fit bias terms (or baselines) with transformers' Trainer, write a patch."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    AutoModel,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from ..patches.backbone import DEFAULT_BACKBONE, fingerprint, load_backbone, resolve_source
from ..patches.engine import MultiTaskEngine
from ..patches.patch_file import PatchFile
from ..patches.tuning import cpu_has_bf16
from .data import TaskData
from .errors import DataError
from .evaluate import evaluate_patch, golden_examples
from .kinds import training_kind
from .model import (
    PairModel,
    PatchModel,
    parse_bias_terms,
    set_trainable,
    trainable_fraction,
    trained_biases,
)
from .sampling import subsample

log = logging.getLogger(__name__)
PAPER_LR_GRID = (1e-4, 4e-4, 7e-4, 1e-3)


@dataclass
class TrainSettings:
    """Everything one training run needs (CLI flags map 1:1)."""

    out: Path
    task: str
    backbone: str = DEFAULT_BACKBONE
    method: str = "bitfit"
    bias_terms: str | None = None
    pooling: str = "mean"
    max_length: int = 128
    learning_rate: float | None = None  # default 1e-3 for bias methods, 2e-5 for full
    lr_grid: list[float] = field(default_factory=list)
    epochs: float = 5.0
    batch_size: int = 16
    warmup_ratio: float = 0.06
    seed: int = 0
    max_train_examples: int | None = None
    train_fraction: float = 1.0  # a seeded, stratified share of the training set
    bf16: bool | None = None  # None: where the hardware has it
    logging_steps: int = 50
    workdir: Path | None = None
    resume: bool = False  # keep optimizer state in epoch checkpoints; go on from the last one

    def __post_init__(self) -> None:
        if not 0 < self.train_fraction <= 1:
            raise DataError(
                f"--train-fraction must be in (0, 1], got {self.train_fraction}; e.g. 0.1 for 10%"
            )

    def lr(self) -> float:
        """The learning rate for this run."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 2e-5 if self.method == "full" else 1e-3


@dataclass
class TrainResult:
    """What a run produced: the file, its dev metrics, and how long it took."""

    out: Path
    metrics: dict[str, float]
    seconds: float
    trainable_percent: float
    learning_rate: float
    model: PatchModel | None = field(default=None, repr=False)
    log_history: list[dict] = field(default_factory=list, repr=False)
    resumed_from: str | None = None


class RowsDataset(torch.utils.data.Dataset):
    """Tokenized rows with labels, for Trainer."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def tokenize(tokenizer, data: TaskData, examples, max_length: int) -> RowsDataset:
    """Examples -> tokenized rows; labels as ids (classification), floats, multi-hot rows, or
    (token tasks) one tag id per word's first sub-token."""
    kind = training_kind(data.kind)
    if kind.per_token:
        return tokenize_words(tokenizer, data, examples, max_length)
    if kind.pairwise:
        return tokenize_pairs(tokenizer, examples, max_length)
    texts = [e.text for e in examples]
    pairs = [e.pair for e in examples] if examples[0].pair is not None else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    index = {label: i for i, label in enumerate(data.labels)}
    rows = []
    for i, e in enumerate(examples):
        row = {k: enc[k][i] for k in enc}
        row["labels"] = kind.row_label(e, index)
        rows.append(row)
    return RowsDataset(rows)


def tokenize_words(tokenizer, data: TaskData, examples, max_length: int) -> RowsDataset:
    """Tagged sentences -> rows whose labels tag each word's first sub-token (-100 elsewhere:
    later sub-tokens and special tokens are left out of the loss)."""
    index = {tag: i for i, tag in enumerate(data.labels)}
    words = [list(e.words) for e in examples]
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    rows = []
    for i, e in enumerate(examples):
        row = {k: enc[k][i] for k in enc}
        seen: set[int] = set()
        tags = []
        for word in enc.word_ids(i):
            first = word is not None and word not in seen
            tags.append(index[e.label[word]] if first else -100)
            if word is not None:
                seen.add(word)
        row["labels"] = tags
        rows.append(row)
    return RowsDataset(rows)


def tokenize_pairs(tokenizer, examples, max_length: int) -> RowsDataset:
    """Each pair's two texts tokenized apart (`pair_*` for the second); the score, or -1."""
    first = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    second = tokenizer([e.pair for e in examples], truncation=True, max_length=max_length)
    rows = []
    for i, e in enumerate(examples):
        row = {k: first[k][i] for k in first} | {f"pair_{k}": second[k][i] for k in second}
        row["labels"] = -1.0 if e.label is None else float(e.label)
        rows.append(row)
    return RowsDataset(rows)


class PairCollator:
    """Pads both texts of each pair (each to its own longest)."""

    def __init__(self, tokenizer):
        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, rows: list[dict]) -> dict:
        first = self.pad([{k: v for k, v in r.items() if not k.startswith("pair_")} for r in rows])
        second = self.pad([{k[5:]: v for k, v in r.items() if k.startswith("pair_")} for r in rows])
        return dict(first) | {f"pair_{k}": v for k, v in second.items()}


def headline(data: TaskData) -> str:
    """The dev metric that picks the best checkpoint and learning rate."""
    scored = not data.dev or data.dev[0].label is not None
    return training_kind(data.kind).main_metric(data.name, data.labels, scored)


def train(settings: TrainSettings, data: TaskData) -> TrainResult:
    """Train with each learning rate of the grid (or the one given); keep the best on dev."""
    rates = settings.lr_grid or [settings.lr()]
    results = []
    for lr in rates:
        one = TrainSettings(**{**asdict(settings), "learning_rate": lr, "lr_grid": []})
        if len(rates) > 1:
            one.out = settings.out.with_name(f"{settings.out.stem}.lr{lr:g}{settings.out.suffix}")
        results.append(train_once(one, data))
    metric = headline(data)
    best = max(results, key=lambda r: r.metrics[metric])
    if len(rates) > 1:
        _promote(best.out, settings.out)
        best.out = settings.out
    return best


def training_rows(settings: TrainSettings, data: TaskData) -> list:
    """The examples a run trains on: the seeded fraction, then the first N if capped."""
    rows = subsample(data.train, settings.train_fraction, settings.seed, data.kind)
    return rows[: settings.max_train_examples] if settings.max_train_examples else rows


def _promote(src: Path, dst: Path) -> None:
    """Move the best grid run's output to the requested path."""
    if dst.is_dir():
        shutil.rmtree(dst)
    src.replace(dst)


def train_once(settings: TrainSettings, data: TaskData) -> TrainResult:
    """One run at one learning rate."""
    set_seed(settings.seed)
    started = time.perf_counter()
    source = resolve_source(settings.backbone)
    local = os.path.isdir(source)
    backbone = AutoModel.from_pretrained(source, dtype=torch.float32, local_files_only=local)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    sha256 = fingerprint(backbone)
    model = build_model(backbone, settings, data)
    trained = set_trainable(model, settings.method, parse_bias_terms(settings.bias_terms))
    if training_kind(data.kind).pairwise and settings.method == "frozen":  # nothing to train
        return _frozen_embedding(settings, data, model, sha256, time.perf_counter() - started)
    train_rows = training_rows(settings, data)
    trainer = _make_trainer(settings, data, model, tokenizer, train_rows)
    checkpoint = _resumable_checkpoint(settings, trainer.args.output_dir)
    trainer.train(resume_from_checkpoint=checkpoint)
    history = trainer.state.log_history
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)  # epoch checkpoints
    seconds = time.perf_counter() - started
    pct = trainable_fraction(model)
    if settings.method == "full":
        metrics = trainer.evaluate()
        metrics = {k.removeprefix("eval_"): v for k, v in metrics.items() if _is_metric(k)}
        _save_full(settings, data, model, tokenizer, metrics, seconds)
        return TrainResult(
            settings.out, metrics, seconds, pct, settings.lr(), model, history, checkpoint
        )
    patch = _to_patch(settings, data, model, trained, sha256, seconds, pct, len(train_rows))
    engine = MultiTaskEngine(load_backbone(settings.backbone, dtype="float32", device="auto"))
    patch.metrics = evaluate_patch(patch, data, settings.backbone, engine=engine)
    if "threshold" in patch.metrics:  # multi_label: chosen on dev (evaluate_patch searched)
        patch.threshold = patch.metrics.pop("threshold")
    patch.examples = golden_examples(patch, data, engine)
    patch.save(settings.out)
    log.info("wrote %s metrics=%s seconds=%.0f", settings.out, patch.metrics, seconds)
    return TrainResult(
        settings.out, patch.metrics, seconds, pct, settings.lr(), model, history, checkpoint
    )


def _resumable_checkpoint(settings: TrainSettings, workdir: str) -> str | None:
    """With --resume, the last epoch checkpoint that holds optimizer state, else None."""
    if not settings.resume:
        return None
    _check_same_settings(settings, Path(workdir))
    last = get_last_checkpoint(workdir)
    if last is None:
        return None
    if not os.path.exists(os.path.join(last, "optimizer.pt")):
        log.warning("%s has no optimizer state (not saved with --resume): starting over", last)
        return None
    log.info("resuming from %s", last)
    return last


def _check_same_settings(settings: TrainSettings, workdir: Path) -> None:
    """Record the run's settings in its workdir, or refuse to resume a run started otherwise."""
    skip = ("resume", "lr_grid", "logging_steps")
    current = json.loads(json.dumps(asdict(settings), default=str))
    current = {k: v for k, v in current.items() if k not in skip}
    record = workdir / "bitpatch-settings.json"
    if not record.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(current, indent=1))
        return
    before = json.loads(record.read_text())
    changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in current.items() if before.get(k) != v]
    if changed:
        raise ValueError(
            f"cannot --resume from {workdir}: it was started with other settings "
            f"({'; '.join(changed)}); rerun with the same settings, or delete {workdir} "
            "to start over"
        )


def _is_metric(key: str) -> bool:
    metrics = (
        "accuracy", "f1", "mcc", "spearman", "pearson", "macro_f1", "micro_f1", "entity_f1",
        "retrieval_accuracy",
    )  # fmt: skip
    return key.removeprefix("eval_") in metrics


def _make_trainer(settings, data, model, tokenizer, train_rows) -> Trainer:
    workdir = settings.workdir or settings.out.parent / f".{settings.out.stem}.work"
    bf16 = settings.bf16
    if bf16 is None:  # where the hardware multiplies bf16 natively
        bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()
    args = TrainingArguments(
        output_dir=str(workdir),
        learning_rate=settings.lr(),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=64,
        lr_scheduler_type="linear",
        warmup_steps=settings.warmup_ratio,
        weight_decay=0.0,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=headline(data),
        greater_is_better=True,
        save_total_limit=1,
        save_only_model=not settings.resume,
        bf16=bf16,
        seed=settings.seed,
        report_to=[],
        logging_steps=settings.logging_steps,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )

    kind = training_kind(data.kind)

    def compute_metrics(pred):
        return kind.score(data.name, pred.predictions, pred.label_ids, labels=data.labels)

    collator = (
        DataCollatorForTokenClassification
        if kind.per_token
        else PairCollator
        if kind.pairwise
        else DataCollatorWithPadding
    )
    return Trainer(
        model=model,
        args=args,
        data_collator=collator(tokenizer),
        train_dataset=tokenize(tokenizer, data, train_rows, settings.max_length),
        eval_dataset=tokenize(tokenizer, data, data.dev, settings.max_length),
        compute_metrics=compute_metrics,
    )


def build_model(backbone, settings: TrainSettings, data: TaskData):
    """The model a kind trains: a pair model for embeddings, else backbone + pooling + head."""
    kind = training_kind(data.kind)
    if kind.pairwise:
        return PairModel(backbone, settings.pooling)
    return PatchModel(backbone, kind.outputs(data.labels), pooling_for(settings, data), kind)


def _frozen_embedding(settings, data, model, sha256, seconds) -> TrainResult:
    """The frozen backbone's own embedding: a patch with no tensors, scored on dev."""
    patch = _to_patch(settings, data, model, [], sha256, seconds, 0.0, 0)
    patch.metrics = evaluate_patch(patch, data, settings.backbone)
    patch.save(settings.out)
    return TrainResult(settings.out, patch.metrics, seconds, 0.0, settings.lr(), model)


def _to_patch(settings, data, model, trained, sha256, seconds, pct, n_train) -> PatchFile:
    name = (
        "sentence-transformers/all-MiniLM-L6-v2"
        if settings.backbone == DEFAULT_BACKBONE
        else settings.backbone
    )
    recipe = {
        "method": settings.method,
        "bias_terms": settings.bias_terms or "all",
        "learning_rate": settings.lr(),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "train_examples": n_train,
        "train_fraction": settings.train_fraction,
        "seconds": round(seconds, 1),
        "trainable_percent": round(pct, 4),
        "data": data.name,
        "hardware": training_hardware(),
    }
    return PatchFile(
        task=settings.task,
        kind=data.kind,
        labels=data.labels,
        pooling=pooling_for(settings, data),
        max_length=settings.max_length,
        backbone=name,
        backbone_sha256=sha256,
        biases=trained_biases(model, trained),
        head_weight=_head_tensor(model, "weight"),
        head_bias=_head_tensor(model, "bias"),
        inputs=patch_inputs(data),
        trainer=recipe,
    )


def _head_tensor(model, name: str):
    """The trained head's weight or bias (float32, CPU); None for a model without a head."""
    return None if model.head is None else getattr(model.head, name).detach().float().cpu().clone()


def patch_inputs(data: TaskData) -> str:
    """What a request row of the task is: pairs only for pair-trained per-text tasks."""
    pairs = not training_kind(data.kind).pairwise and any(ex.pair is not None for ex in data.train)
    return "text_pair" if pairs else "text"


def pooling_for(settings: TrainSettings, data: TaskData) -> str:
    """Token tasks pool nothing (every token has its tag); the others as settings say."""
    return "none" if training_kind(data.kind).per_token else settings.pooling


def training_hardware() -> str:
    """Where a run trains, for its metadata: the GPU's name, or the CPU's torch threads."""
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {torch.get_num_threads()} threads"


def _save_full(settings, data, model, tokenizer, metrics, seconds) -> None:
    """Full fine-tuning: the tuned backbone as a standard HF folder, its head, metrics.json."""
    out = Path(settings.out)
    model.backbone.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if model.head is not None:
        save_file(
            {
                "weight": model.head.weight.detach().contiguous(),
                "bias": model.head.bias.detach().contiguous(),
            },
            str(out / "head.safetensors"),
        )
    record = {
        "metrics": metrics,
        "seconds": round(seconds, 1),
        "pooling": settings.pooling,
        "kind": data.kind,
        "labels": data.labels,
        "learning_rate": settings.lr(),
        "epochs": settings.epochs,
        "seed": settings.seed,
        "train_fraction": settings.train_fraction,
    }
    (out / "metrics.json").write_text(json.dumps(record, indent=2))
