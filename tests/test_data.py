"""Training data loaders: GLUE quirks, user formats, and errors naming file and line."""

from __future__ import annotations

import json

import pytest

from bitpatch.trainer.data import Columns, DataError, load_glue, load_user_data

GLUE_ROWS = {  # task folder, train rows, dev rows (from ../shared/glue/README.md)
    "sst2": ("SST-2", 67349, 872),
    "rte": ("RTE", 2490, 277),
    "mrpc": ("MRPC", 3668, 408),
    "cola": ("CoLA", 8551, 1043),
    "stsb": ("STS-B", 5749, 1500),
}


@pytest.mark.glue
@pytest.mark.parametrize("task", sorted(GLUE_ROWS))
def test_glue_folders_load_with_exact_row_counts(glue_dir, task):
    folder, n_train, n_dev = GLUE_ROWS[task]
    data = load_glue(task, glue_dir / folder)
    assert (len(data.train), len(data.dev)) == (n_train, n_dev)
    if task == "stsb":
        assert data.kind == "regression" and all(0 <= e.label <= 5 for e in data.dev)
    else:
        assert data.kind == "classification" and {e.label for e in data.train} == set(data.labels)
    assert all(e.text and e.text == e.text.strip() for e in data.train)


def write(path, text: str, bom: bool = False):
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_glue_quirks_bom_no_header_no_final_newline_quotes(tmp_path):
    mrpc = tmp_path / "mrpc"
    mrpc.mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write(mrpc / "train.tsv", header + '1\t1\t2\t"He said\tit was\n0\t3\t4\ta\tb\n', bom=True)
    write(mrpc / "dev.tsv", header + "1\t5\t6\tx\ty", bom=True)
    data = load_glue("mrpc", mrpc)
    assert [e.text for e in data.train] == ['"He said', "a"]  # a quote does not merge rows
    assert data.train[0].label == "equivalent" and len(data.dev) == 1
    cola = tmp_path / "cola"
    cola.mkdir()
    write(cola / "train.tsv", "src\t1\t\tGood sentence .\nsrc\t0\t*\tBad sentence .\n")
    write(cola / "dev.tsv", "src\t1\t\tNo final newline .")
    data = load_glue("cola", cola)
    assert [e.label for e in data.train] == ["acceptable", "unacceptable"]
    assert data.dev[0].text == "No final newline ."


def test_glue_errors_name_file_and_line(tmp_path):
    rte = tmp_path / "rte"
    rte.mkdir()
    write(rte / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\n")
    write(rte / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=r"train\.tsv:3: expected at least 4"):
        load_glue("rte", rte)
    write(rte / "train.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"dev\.tsv:2: unknown label 'maybe'"):
        load_glue("rte", rte)


def test_user_csv_tsv_jsonl(tmp_path):
    rows = '"hello, world",pos\nbad day,neg\nok,pos\nawful,neg\nnice,pos\nmeh,neg\n'
    data = load_user_data(
        write(tmp_path / "t.csv", "text,label\n" + rows), Columns(), dev_split=0.2
    )
    assert data.kind == "classification" and data.labels == ["neg", "pos"]
    assert len(data.dev) == 1 and len(data.train) == 5
    assert "hello, world" in [e.text for e in data.train + data.dev]
    tsv = write(tmp_path / "p.tsv", "q\tr\tscore\na\tb\t0.5\nc\td\t4.25\ne\tf\t1.0\n")
    data = load_user_data(tsv, Columns("q", "r", "score"), dev_file=tsv)
    assert data.kind == "regression" and data.dev[1].pair == "d" and data.dev[1].label == 4.25
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": 1}]
    jsonl = write(tmp_path / "j.jsonl", "\n".join(json.dumps(r) for r in rows))
    data = load_user_data(jsonl, Columns(), dev_file=jsonl)
    assert data.kind == "classification" and data.labels == ["0", "1"]


def test_user_data_errors(tmp_path):
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        load_user_data(empty, Columns())
    missing = write(tmp_path / "m.csv", "sentence,label\na,pos\n")
    with pytest.raises(DataError, match=r"m\.csv:2: column 'text' is missing.*--text-column"):
        load_user_data(missing, Columns())
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\nc,pos\nd,meh\n")
    with pytest.raises(DataError, match=r"dev\.csv:3: label 'meh' does not occur"):
        load_user_data(train, Columns(), dev_file=dev)
    mixed = write(tmp_path / "x.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": 2}')
    with pytest.raises(DataError, match=r"x\.jsonl:2: label 2 is a int"):
        load_user_data(mixed, Columns())
    broken = write(tmp_path / "y.jsonl", '{"text": "a", "label": 1}\n{"text": ')
    with pytest.raises(DataError, match=r"y\.jsonl:2: not valid JSON"):
        load_user_data(broken, Columns())


def test_hf_datasets_builder_with_local_files(tmp_path):
    pytest.importorskip("datasets")
    from bitpatch.trainer.data import load_hf_dataset

    rows = [{"sentence": f"text {i}", "y": ["neg", "pos"][i % 2]} for i in range(6)]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    files = {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "validation")}
    data = load_hf_dataset("json", None, Columns("sentence", None, "y"), data_files=files)
    assert data.kind == "classification" and data.labels == ["neg", "pos"]
    assert len(data.train) == 6 and data.dev[1].label == "pos"
