"""Token-tagging data: CoNLL files (one `token<TAB>tag` per line, a blank line between
sentences; the CoNLL-2003 four-column form reads the same, its tag last)."""

from __future__ import annotations

from pathlib import Path

from .data import DataError, Example, TaskData, split_dev


def read_conll(path: str | Path) -> list[Example]:
    """Sentences of a CoNLL file: words, their tags, the line each sentence starts on."""
    path = Path(path)
    sentences: list[Example] = []
    words: list[str] = []
    tags: list[str] = []
    start = 1
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if not fields:
            if words:
                sentences.append(_sentence(words, tags, start))
            words, tags, start = [], [], number + 1
            continue
        if len(fields) < 2:
            raise DataError(
                f"{path}:{number}: expected 'token<TAB>tag' (or CoNLL-2003's four columns, "
                f"tag last), got {line!r}"
            )
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append(_sentence(words, tags, start))
    if not sentences:
        raise DataError(f"{path}: no sentences found")
    return sentences


def _sentence(words: list[str], tags: list[str], line: int) -> Example:
    return Example(" ".join(words), None, tuple(tags), line, tuple(words))


def load_conll(train_path, dev_file=None, dev_split: float = 0.1, seed: int = 0) -> TaskData:
    """A CoNLL train file plus a dev file or a held-out split of it."""
    train = read_conll(train_path)
    dev = read_conll(dev_file) if dev_file else None
    if dev is None:
        train, dev = split_dev(train, dev_split, seed)
    return tagged_data(Path(train_path).stem, train, dev, dev_file or train_path)


def tagged_data(name: str, train: list[Example], dev: list[Example], path) -> TaskData:
    """TaskData of tagged sentences: the tag set ('O' first, then sorted)."""
    tags = {t for e in train for t in e.label}
    unknown = sorted({t for e in dev for t in e.label} - tags)
    if unknown:
        raise DataError(f"{path}: dev tags {unknown} never occur in the training data")
    labels = sorted(tags, key=lambda t: (t != "O", t))
    return TaskData(name, "token_classification", labels, train, dev)


def load_hf_tagging(
    name: str,
    config: str | None,
    words_column: str = "tokens",
    tags_column: str = "ner_tags",
    data_files: dict[str, str] | None = None,
) -> TaskData:
    """A `datasets` tagging set (e.g. conll2003): lists of words and of tags (ids of a
    ClassLabel sequence, or strings) per sentence; train and validation splits."""
    try:
        import datasets
    except ImportError as err:
        raise DataError("--hf-dataset needs `pip install datasets`") from err
    loaded = datasets.load_dataset(name, config, data_files=data_files)
    for split in ("train", "validation"):
        if split not in loaded:
            raise DataError(f"dataset {name!r} has no split {split!r}; it has {list(loaded)}")
        missing = {words_column, tags_column} - set(loaded[split].column_names)
        if missing:
            raise DataError(
                f"dataset {name!r} has no column(s) {sorted(missing)}; it has "
                f"{loaded[split].column_names} (use --text-column/--label-column)"
            )
    feature = getattr(loaded["train"].features[tags_column], "feature", None)
    names = getattr(feature, "names", None)

    def sentences(split: str) -> list[Example]:
        out = []
        for i, record in enumerate(loaded[split]):
            tags = [names[t] if names else str(t) for t in record[tags_column]]
            out.append(_sentence([str(w) for w in record[words_column]], tags, i + 1))
        return out

    return tagged_data(name.split("/")[-1], sentences("train"), sentences("validation"), name)
