"""The benchmark report's tables (bench/report.py), on hand-made results."""

from pathlib import Path

from bench.report import (
    LOAD_SCENARIOS,
    _at_least,
    _at_most,
    _load_lines,
    round_ratio,
)

SAVED = Path(__file__).resolve().parents[1] / "docs" / "bench"


def _scenario(inputs_per_s: float, **extra) -> dict:
    figures = dict(inputs_per_s=inputs_per_s, requests_per_s=1.0, p50_ms=1, p95_ms=2, p99_ms=3)
    return figures | {"errors": 0} | extra


def test_every_load_row_keeps_its_name_and_figures_without_client_cores():
    results = {"config": {"clients": 64}}
    for _, section, scenario, _ in LOAD_SCENARIOS:
        results.setdefault(section, {})[scenario] = _scenario(123.4, client_cores=0.5)
    results["designs"]["copies"] = _scenario(77.7)  # no load-generator CPU recorded
    lines = _load_lines(results)
    rows = [line for line in lines if line.startswith("| (a) one model copy")]
    assert rows == [
        "| (a) one model copy per task, 16 tasks | 77.7 | 1.0 | 1.0 | 2.0 | 3.0 | "
        "0 | - | - | - | - | - |"
    ]
    assert sum("| 123.4 |" in line for line in lines) == len(LOAD_SCENARIOS) - 1


def test_bars_are_met_at_the_bar_and_not_below():
    assert _at_least("x", 0.80, "0.80")[3] and not _at_least("x", 0.799, "0.80")[3]
    assert _at_most("x", 1.25, "1.25")[3] and not _at_most("x", 1.26, "1.25")[3]
    assert _at_least("x", 3.98, "3", 2)[1:] == ("3.98", ">= 3", True)


def test_round_ratio_pairs_rounds_and_gives_the_standard_error():
    traffic = {
        "single": {"rounds_inputs_per_s": [100.0, 200.0, 100.0]},
        "mixed16": {"rounds_inputs_per_s": [90.0, 200.0, 110.0]},  # ratios 0.9, 1.0, 1.1
    }
    mean, error, n = round_ratio({"traffic": traffic}, "mixed16")
    assert (round(mean, 6), round(error, 6), n) == (1.0, round(0.1 / 3**0.5, 6), 3)
    assert round_ratio({"traffic": {"single": {}, "mixed16": {}}}, "mixed16") is None
