"""bench/offline.py: the queue replay takes batches as the server does, from rows of given
lengths."""

from __future__ import annotations

from bench.offline import queue_batches, synthetic_rows
from tiny import make_tokenizer


def test_bench_queue_batches_take_every_row_once():
    rows = [{"input_ids": [0] * n} for n in [5, 9, 30, 6, 31, 8, 12, 29, 7, 10] * 13]
    batches = queue_batches(rows, batch_size=8, queue_rows=24)
    taken = [id(r) for b in batches for r in b]
    assert sorted(taken) == sorted(id(r) for r in rows) and len(set(taken)) == len(rows)
    assert all(len(b) <= 8 for b in batches) and batches[0][0] is rows[0]


def test_bench_replay_rows_have_the_recorded_lengths():
    tokenizer = make_tokenizer("bert")
    lengths = [2, 3, 17, 128, 5]
    rows = synthetic_rows(lengths, tokenizer, seed=1)
    assert [len(r["input_ids"]) for r in rows] == lengths
    assert all(r["input_ids"][0] == tokenizer.cls_token_id for r in rows)
    assert all(r["input_ids"][-1] == tokenizer.sep_token_id for r in rows)
