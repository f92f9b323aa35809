"""Embedding data: text pairs with an optional similarity score (0-1 or 0-5), from a user file
or GLUE STS-B. Without scores, each pair is a positive and the other pairs of a batch are its
negatives."""

from __future__ import annotations

from pathlib import Path

from .data import Columns, DataError, Example, TaskData, load_glue, read_records, split_dev


def embedding_data(data: TaskData) -> TaskData:
    """Pair data (e.g. STS-B's 0-5 regression) as an embedding task: scores scaled to 0-1."""
    if any(e.pair is None for e in data.train):
        raise DataError(
            f"{data.name}: an embedding task trains on text pairs; this data has single texts"
        )
    top = max((float(e.label) for e in data.train + data.dev if e.label is not None), default=1.0)
    scale = 5.0 if top > 1 else 1.0

    def scaled(examples: list[Example]) -> list[Example]:
        return [
            Example(e.text, e.pair, None if e.label is None else float(e.label) / scale, e.line)
            for e in examples
        ]

    return TaskData(data.name, "embedding", [], scaled(data.train), scaled(data.dev))


def load_glue_pairs(task: str, folder) -> TaskData:
    """A GLUE pair task (STS-B) as embedding data."""
    return embedding_data(load_glue(task, folder))


def load_pairs(path, columns: Columns, dev_file=None, dev_split: float = 0.1, seed: int = 0):
    """A user file of pairs: --text-column and --pair-column, --label-column optional."""
    if columns.pair is None:
        raise DataError("an embedding task needs --pair-column (the second text of each pair)")
    train = _read_pairs(Path(path), columns)
    if dev_file:
        dev = _read_pairs(Path(dev_file), columns)
    else:
        train, dev = split_dev(train, dev_split, seed)
    return embedding_data(TaskData(Path(path).stem, "embedding", [], train, dev))


def _read_pairs(path: Path, columns: Columns) -> list[Example]:
    examples = []
    for line, record in read_records(path):
        for name in (columns.text, columns.pair):
            if record.get(name) is None:
                raise DataError(
                    f"{path}:{line}: column {name!r} is missing; columns found: {sorted(record)}"
                )
        score = record.get(columns.label)
        if score is not None and score != "":
            try:
                score = float(score)
            except ValueError as err:
                raise DataError(f"{path}:{line}: expected a numeric score, got {score!r}") from err
        else:
            score = None
        examples.append(Example(str(record[columns.text]), str(record[columns.pair]), score, line))
    if not examples:
        raise DataError(f"{path}: no pairs found after the header")
    scored = {e.label is not None for e in examples}
    if len(scored) > 1:
        raise DataError(f"{path}: some pairs have a score and some do not; score all or none")
    return examples
