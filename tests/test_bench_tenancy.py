"""The tenancy benchmark's arithmetic: where a refusal came from, rates over the answers' span."""

from __future__ import annotations

from bench.tenancy import OpenResult, refused_where, tenancy_markdown


def test_a_deadline_refusal_is_told_by_where_it_happened():
    admission = b'{"error": {"message": "the request\'s rows would start in ~300 ms, too close"}}'
    queue = b'{"error": {"message": "the request\'s rows did not start before its deadline"}}'
    assert refused_where("503", admission) == "admission"
    assert refused_where("503", queue) == "queue"
    assert refused_where("503", b'{"error": "the queue holds 2048 rows"}') is None
    assert refused_where("429", admission) is None


def test_answered_per_second_counts_until_the_last_answer():
    result = OpenResult()
    result.sent = 40
    for _ in range(30):
        result.add("200", 0.5)
    result.add("503", 0.004, b"would start in ~400 ms")
    result.add("503", 0.26, b"did not start before its deadline")
    result.last_answer = result.started + 20.0  # the queue answered for 20 s
    summary = result.summary(10.0)
    assert summary["sent_per_s"] == 4.0 and summary["answered_per_s"] == 1.5
    assert summary["errors"] == {"503": 2}
    assert summary["refused_at_admission"] == {"count": 1, "p50_ms": 4.0, "p99_ms": 4.0}
    assert summary["refused_at_queue"]["count"] == 1


def test_the_overload_table_shows_both_kinds_of_refusal():
    side = {"p50_ms": 9.0, "p99_ms": 20.0, "errors": {}, "answered_per_s": 10.0}
    noisy = {"b_alone": side, "b_beside_a": side, "a": side, "b_p99_ratio": 1.0}
    policy = {"capacity_rows_per_s": 700.0, "noisy": noisy}
    deadline = {**side, "errors": {"503": 5}, "server_p99_ms_worst_task": 300.0,
                "refused_at_admission": {"count": 4, "p50_ms": 3.0, "p99_ms": 30.0},
                "refused_at_queue": {"count": 1, "p50_ms": 260.0, "p99_ms": 260.0}}  # fmt: skip
    none = {**side, "server_p99_ms_worst_task": 900.0}
    table = tenancy_markdown(
        {
            "default": policy,
            "arrival": policy,
            "overload": {"deadline": deadline, "no_deadline": none, "deadline_ms": 250},
        }  # fmt: skip
    )
    assert "| 3.0 / 30.0 | 1, 260.0 |" in table
    assert "| none | 10.0 | 9.0 / 20.0 | 900.0 | {} | - | 0 |" in table


def test_the_storm_table_has_a_row_per_switch_interval():
    side = {"p50_ms": 9.0, "p99_ms": 20.0, "errors": {}, "answered_per_s": 10.0}
    overload = {"deadline": {**side, "server_p99_ms_worst_task": 1.0}, "deadline_ms": 250,
                "no_deadline": {**side, "server_p99_ms_worst_task": 1.0}}  # fmt: skip
    storm = {
        "5.0": {"admitted_per_s": 5.6, "admitted_p50_ms": 1500.0, "admitted_p99_ms": 2000.0,
                "refused_per_s": 3100.0},
        "0.2": {"admitted_per_s": 50.0, "admitted_p50_ms": 160.0, "admitted_p99_ms": 300.0,
                "refused_per_s": 2300.0},
    }  # fmt: skip
    table = tenancy_markdown({"overload": overload, "storm": storm})
    assert "| 5.0 | 5.6 | 1500.0 / 2000.0 | 3100.0 |" in table
    assert "| 0.2 | 50.0 | 160.0 / 300.0 | 2300.0 |" in table
