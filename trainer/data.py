"""Training data: GLUE TSV folders, user CSV/TSV/JSONL files, Hugging Face datasets."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .kinds import is_number, training_kind

__all__ = ["Columns", "DataError", "Example", "TaskData", "load_glue", "load_user_data"]


@dataclass(frozen=True)
class Example:
    """One row: a text, an optional second text, a label (name or float), where it came from."""

    text: str
    pair: str | None
    label: str | float | tuple[str, ...]  # label names (multi_label) or tags (one per word)
    line: int
    words: tuple[str, ...] | None = None  # token tasks: the words `text` joins with spaces


@dataclass
class TaskData:
    """Train and dev examples of one task, its kind and its label names."""

    name: str
    kind: str  # classification | regression | multi_label | token_classification
    labels: list[str]
    train: list[Example]
    dev: list[Example]


@dataclass(frozen=True)
class GlueSpec:
    """Where a GLUE task's columns are in its TSV files."""

    text: int
    pair: int | None
    label: int
    header: bool
    label_names: dict[str, str] | None  # raw label -> readable name; None: regression
    dev_file: str = "dev.tsv"


BINARY = {"0": "negative", "1": "positive"}
GLUE = {
    "sst2": GlueSpec(0, None, 1, True, BINARY),
    "cola": GlueSpec(3, None, 1, False, {"0": "unacceptable", "1": "acceptable"}),
    "mrpc": GlueSpec(3, 4, 0, True, {"0": "not_equivalent", "1": "equivalent"}),
    "rte": GlueSpec(
        1, 2, 3, True, {"entailment": "entailment", "not_entailment": "not_entailment"}
    ),
    "qnli": GlueSpec(
        1, 2, 3, True, {"entailment": "entailment", "not_entailment": "not_entailment"}
    ),
    "stsb": GlueSpec(7, 8, -1, True, None),
    "mnli": GlueSpec(
        8,
        9,
        -1,
        True,
        {x: x for x in ("contradiction", "entailment", "neutral")},
        dev_file="dev_matched.tsv",
    ),
    "qqp": GlueSpec(3, 4, 5, True, {"0": "not_duplicate", "1": "duplicate"}),
    "wnli": GlueSpec(1, 2, 3, True, {"0": "not_entailment", "1": "entailment"}),
}


def read_tsv_rows(path: Path, header: bool) -> list[tuple[int, list[str]]]:
    """(line number, fields) of a GLUE TSV: UTF-8 (BOM dropped), tabs, no quoting."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8-sig")
    lines = text.split("\n")
    rows = [(i + 1, line.rstrip("\r").split("\t")) for i, line in enumerate(lines) if line.strip()]
    return rows[1:] if header else rows


def load_glue_split(task: str, path: Path) -> list[Example]:
    """One GLUE split as examples (labels mapped to readable names)."""
    spec = GLUE[task]
    examples = []
    for line, fields in read_tsv_rows(path, spec.header):
        need = max(spec.text, spec.pair or 0, spec.label if spec.label >= 0 else 0) + 1
        if len(fields) < need:
            raise DataError(
                f"{path}:{line}: expected at least {need} tab-separated columns, "
                f"found {len(fields)}"
            )
        raw = fields[spec.label].strip()
        label = _glue_label(spec, raw, path, line)
        pair = fields[spec.pair].strip() if spec.pair is not None else None
        examples.append(Example(fields[spec.text].strip(), pair, label, line))
    if not examples:
        raise DataError(f"{path}: no examples found")
    return examples


def _glue_label(spec: GlueSpec, raw: str, path: Path, line: int) -> str | float:
    if spec.label_names is None:
        try:
            return float(raw)
        except ValueError as err:
            raise DataError(f"{path}:{line}: expected a numeric score, got {raw!r}") from err
    if raw not in spec.label_names:
        raise DataError(
            f"{path}:{line}: unknown label {raw!r}; expected one of {sorted(spec.label_names)}"
        )
    return spec.label_names[raw]


def load_glue(task: str, folder: str | Path) -> TaskData:
    """A GLUE task folder in the original layout (train.tsv, dev.tsv)."""
    if task not in GLUE:
        raise DataError(f"unknown GLUE task {task!r}; expected one of {sorted(GLUE)}")
    folder = Path(folder)
    spec = GLUE[task]
    train = load_glue_split(task, folder / "train.tsv")
    dev = load_glue_split(task, folder / spec.dev_file)
    if spec.label_names is None:
        return TaskData(task, "regression", [], train, dev)
    return TaskData(
        task, "classification", list(dict.fromkeys(spec.label_names.values())), train, dev
    )


@dataclass(frozen=True)
class Columns:
    """Which columns of a user file hold the text, the optional pair and the label."""

    text: str = "text"
    pair: str | None = None
    label: str = "label"
    label_sep: str = ","  # multi_label: labels in one cell, split on this
    label_columns: tuple[str, ...] = ()  # multi_label: one 0/1 column per label instead


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) from CSV, TSV (header row) or JSONL (one object a line)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a header row and examples")
    if path.suffix in (".jsonl", ".json"):
        return _read_jsonl(path, text)
    delimiter = "\t" if path.suffix in (".tsv", ".tab") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    return [(reader.line_num, row) for row in reader]


def _read_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{i}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise DataError(f"{path}:{i}: expected a JSON object per line")
        records.append((i, record))
    return records


def load_user_file(path: str | Path, columns: Columns) -> list[Example]:
    """A user CSV/TSV/JSONL file as examples; raw labels kept (typed later)."""
    path = Path(path)
    examples = []
    for line, record in read_records(path):
        wanted = columns.label_columns or (columns.label,)
        for name in (columns.text, columns.pair, *wanted):
            if name is not None and record.get(name) is None:
                raise DataError(
                    f"{path}:{line}: column {name!r} is missing; columns found: "
                    f"{sorted(record)} (use --text-column/--pair-column/"
                    "--label-column)"
                )
        pair = str(record[columns.pair]) if columns.pair else None
        if columns.label_columns:
            label = tuple(c for c in columns.label_columns if _flag(record[c], path, line, c))
        else:
            label = record[columns.label]
        examples.append(Example(str(record[columns.text]), pair, label, line))
    if not examples:
        raise DataError(f"{path}: no examples found after the header")
    return examples


def infer_kind(examples: list[Example], path: str | Path) -> str:
    """classification for strings/ints, regression when labels are numbers with fractions."""
    types = {type(e.label) for e in examples}
    numeric = types <= {int, float} or all(is_number(e.label) for e in examples)
    if len(types) > 1 and not types <= {int, float}:
        first = next(e for e in examples if type(e.label) is not type(examples[0].label))
        raise DataError(
            f"{path}:{first.line}: label {first.label!r} is a "
            f"{type(first.label).__name__}, earlier labels are "
            f"{type(examples[0].label).__name__}; use one label type per file"
        )
    if numeric and any(float(e.label) != int(float(e.label)) for e in examples):
        return "regression"
    return "classification"


def _flag(value, path, line: int, column: str) -> bool:
    """A 0/1 label column's cell."""
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes"):
        return True
    if text in ("0", "0.0", "false", "no", ""):
        return False
    raise DataError(f"{path}:{line}: column {column!r} must be 0 or 1, got {value!r}")


def type_labels(examples: list[Example], kind: str, path, sep: str = ",") -> list[Example]:
    """Labels as the kind reads them: floats (regression), strings (classification) or tuples
    (multi_label)."""
    reader = training_kind(kind)
    return [
        Example(e.text, e.pair, reader.label_of(e.label, path, e.line, sep), e.line)
        for e in examples
    ]


def load_user_data(
    train_path,
    columns: Columns,
    dev_file=None,
    dev_split: float = 0.1,
    kind: str | None = None,
    seed: int = 0,
) -> TaskData:
    """A user train file plus a dev file or a held-out split of train."""
    train = load_user_file(train_path, columns)
    kind = kind or ("multi_label" if columns.label_columns else infer_kind(train, train_path))
    train = type_labels(train, kind, train_path, columns.label_sep)
    if dev_file:
        dev = type_labels(load_user_file(dev_file, columns), kind, dev_file, columns.label_sep)
    else:
        train, dev = split_dev(train, dev_split, seed)
    reader = training_kind(kind)
    labels = reader.label_names(train, tuple(columns.label_columns))
    reader.check_dev(dev, labels, dev_file or train_path)
    return TaskData(Path(train_path).stem, kind, labels, train, dev)


def split_dev(examples: list[Example], fraction: float, seed: int):
    """A seeded random split of `fraction` of the examples into a dev set."""
    if not 0 < fraction < 1:
        raise DataError(f"--dev-split must be between 0 and 1, got {fraction}")
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    n_dev = max(1, int(len(shuffled) * fraction))
    return shuffled[n_dev:], shuffled[:n_dev]


def _named(label, names: list[str]):
    return tuple(names[i] for i in label) if isinstance(label, list) else names[label]


def load_hf_dataset(
    name: str,
    config: str | None,
    columns: Columns,
    kind: str | None = None,
    train_split: str = "train",
    dev_split: str = "validation",
    data_files: dict[str, str] | None = None,
) -> TaskData:
    """A Hugging Face `datasets` dataset: a hub name, or a builder ('json', 'csv') + files."""
    try:
        import datasets
    except ImportError as err:
        raise DataError("--hf-dataset needs `pip install datasets`") from err
    loaded = datasets.load_dataset(name, config, data_files=data_files)
    splits = {}
    for split in (train_split, dev_split):
        if split not in loaded:
            raise DataError(f"dataset {name!r} has no split {split!r}; it has {list(loaded)}")
        rows = [
            Example(
                str(r[columns.text]),
                str(r[columns.pair]) if columns.pair else None,
                r[columns.label],
                i + 1,
            )
            for i, r in enumerate(loaded[split])
        ]
        splits[split] = rows
    feature = loaded[train_split].features.get(columns.label)
    # ClassLabel, or a sequence of them (multi-label sets): integer ids -> names
    names = getattr(feature, "names", None) or getattr(
        getattr(feature, "feature", None), "names", None
    )
    if names:
        for split, rows in splits.items():
            splits[split] = [Example(e.text, e.pair, _named(e.label, names), e.line) for e in rows]
    kind = kind or infer_kind(splits[train_split], name)
    train = type_labels(splits[train_split], kind, name, columns.label_sep)
    dev = type_labels(splits[dev_split], kind, name, columns.label_sep)
    reader = training_kind(kind)
    labels = reader.label_names(train, tuple(columns.label_columns), tuple(names or ()))
    reader.check_dev(dev, labels, name)
    return TaskData(name.split("/")[-1], kind, list(labels), train, dev)
