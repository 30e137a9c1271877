import json
from pathlib import Path

from loadtests import report

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "results.json"


def _results(**sale_overrides):
    results = json.loads(RESULTS.read_text())
    results["summary"]["sale"].update(sale_overrides)
    return results


def test_a_missed_sale_goal_is_explained_with_the_figures_of_the_same_run():
    results = _results(all_final_after_open_s=40.0, sold_out_after_open_s=39.5)

    text = report.markdown(results)

    assert "### What limits the missed goals" in text
    assert "**Sale duration** is bound by the API's request rate" in text
    assert f"{results['summary']['sale']['all_rps_in_sale_window']} req/s" in text


def test_no_section_when_every_goal_is_met():
    results = _results(all_final_after_open_s=5.0, sold_out_after_open_s=4.9)
    for run in [*results["runs"], results["summary"]]:
        run["sale"]["purchase_rps_in_sale_window"] = run["naive"]["purchase_rps_in_sale_window"] * 4
        run["sale"]["purchase_latency_in_sale_window"]["p99_ms"] = (
            run["naive"]["purchase_latency_in_sale_window"]["p99_ms"] / 4)
        run["flood"]["rps"] = run["accept"]["rps"] = run["floor"]["rps"] * 2

    assert [row for row in report.goals(results) if row["verdict"] == "MISS"] == []
    assert "What limits the missed goals" not in report.markdown(results)


def test_a_ratio_goal_is_the_median_of_the_ratios_measured_within_each_run():
    runs = [
        {"floor": {"rps": 400.0}, "accept": {"rps": 180.0}},  # 0.45
        {"floor": {"rps": 500.0}, "accept": {"rps": 260.0}},  # 0.52
        {"floor": {"rps": 300.0}, "accept": {"rps": 240.0}},  # 0.80
    ]
    # The ratio of the medians (240 / 400 = 0.60) mixes two runs' machine states.
    results = {"runs": runs, "summary": {"floor": {"rps": 400.0}, "accept": {"rps": 240.0}}}

    row = next(r for r in report.goals(results) if r["key"] == "accept_vs_floor")

    assert row["value"] == 0.52
    assert row["verdict"] == "PASS"
    assert "0.45, 0.52, 0.80" in row["measured"]
