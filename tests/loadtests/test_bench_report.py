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
    summary = results["summary"]
    summary["sale"]["purchase_rps_in_sale_window"] = summary["naive"]["purchase_rps_in_sale_window"] * 4
    summary["sale"]["purchase_latency_in_sale_window"]["p99_ms"] = (
        summary["naive"]["purchase_latency_in_sale_window"]["p99_ms"] / 4)
    summary["flood"]["rps"] = summary["accept"]["rps"] = summary["floor"]["rps"] * 2

    assert [row for row in report.goals(results) if row["verdict"] == "MISS"] == []
    assert "What limits the missed goals" not in report.markdown(results)
