import copy
import json
from pathlib import Path

from loadtests import report
from loadtests.bench import summarize

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "results.json"
ISSUE_9_GOALS = {
    "sold_out_vs_health",
    "accept_vs_health",
    "event_read_vs_health",
    "poll_pending_vs_health",
    "poll_final_vs_health",
    "sold_out_vs_baseline",
    "accept_vs_baseline",
    "event_read_vs_baseline",
    "poll_pending_vs_baseline",
    "poll_final_vs_baseline",
    "sale_final",
    "naive_rps",
    "naive_p99",
    "naive_flood",
    "crowd_answered",
    "cpu_per_request",
    "peak_rss",
}
PROFILED = ("health", "event_read", "sold_out", "accept", "poll_pending", "poll_final")


def _steady(rps: float, cpu_ms: float = 1.0) -> dict:
    return {
        "rps": rps,
        "p99_ms": 50.0,
        "errors": 0,
        "api_cpu_ms_per_request": cpu_ms,
        "cpu_cores": {"other": 0.0},
    }


def _run(health: float = 2000.0) -> dict:
    """One run's figures where every goal of issue 9 is met."""
    sale = {
        "tickets": 10_000,
        "sold_out_after_open_s": 6.0,
        "all_final_after_open_s": 6.2,
        "client_saw_all_final_after_open_s": 7.0,
        "purchase_rps_in_sale_window": 900.0,
        "purchase_latency_in_sale_window": {"p99_ms": 100.0},
        "api_cpu_ms_per_request": 1.0,
        "line": {
            "polls_per_accepted_order": 1.1,
            "final_to_seen_p50_s": 0.6,
            "final_to_seen_p90_s": 0.9,
            "estimates_null": 0,
            "estimate_abs_error_median_s": 0.4,
            "estimate_abs_error_p90_s": 0.8,
        },
    }
    naive = {
        "purchase_rps_in_sale_window": 300.0,
        "purchase_latency_in_sale_window": {"p99_ms": 400.0},
        "flood": _steady(300.0),
    }
    return {
        "bare": _steady(20_000.0, 0.05),
        "health": _steady(health, 0.5),
        "floor": _steady(0.7 * health),
        "accept": _steady(0.5 * health),
        "flood": _steady(0.9 * health),
        "poll_pending": _steady(0.7 * health),
        "poll_final": _steady(0.7 * health),
        "sale": sale,
        "naive": naive,
        "crowd": {
            "connections": 2000,
            "requests": 30_000,
            "unanswered": 0,
            "answered_late": 0,
            "busy_answers": 0,
            "server_errors": 0,
            "latency": {"p50_ms": 300.0, "p99_ms": 2000.0},
        },
        "baseline": {
            "commit": "df71965",
            "floor": _steady(100.0),
            "accept": _steady(100.0),
            "poll_pending": _steady(100.0),
            "poll_final": _steady(100.0),
            "flood": _steady(100.0),
        },
    }


def _results(runs: list[dict]) -> dict:
    return {
        "command": "python -m loadtests.bench --runs 3",
        "started": "now",
        "wall_seconds": 1.0,
        "code": {"commit": "abc1234"},
        "args": {"concurrency": "64", "buyers": "256"},
        "machine": {"cpus": 2},
        "runs": runs,
        "summary": summarize(copy.deepcopy(runs)),
        "scale_out": {
            "one_event/x2": {
                "processes": 2,
                "shape": "one_event",
                "orders": 20000,
                "seconds": 4.0,
                "orders_per_s": 5000.0,
                "cpu_cores": {},
            }
        },
        "stage_profiles": {
            name: {
                "cpu_us_per_request": 500.0,
                "stages": {"sql": 40.0, "rendering": 20.0, "other": 40.0},
            }
            for name in PROFILED
        },
        "baseline": {"commit": "df71965", "server": "gunicorn sync"},
        "peak_rss_mb": [{"name": "api", "role": "api child", "pid": 1, "rss_mb": 100.0}],
        "failure": None,
        "invariant_broken": False,
    }


def _row(results: dict, key: str) -> dict:
    return next(row for row in report.goals(results) if row["key"] == key)


def test_every_goal_of_issue_9_has_a_row_and_all_pass_on_a_run_that_meets_them():
    rows = report.goals(_results([_run(), _run(2100.0), _run(1900.0)]))

    assert ISSUE_9_GOALS <= {row["key"] for row in rows}
    assert [row["key"] for row in rows if row["verdict"] != "PASS"] == []


def test_the_line_goals_of_issue_10_have_rows_and_a_missed_one_says_by_how_much():
    slow = _run()
    slow["sale"]["line"]["estimate_abs_error_median_s"] = 2.0
    rows = report.goals(_results([slow]))
    keys = {row["key"]: row for row in rows}
    assert {"line_polls", "line_seen", "line_estimate"} <= set(keys)
    assert keys["line_polls"]["verdict"] == keys["line_seen"]["verdict"] == "PASS"
    assert keys["line_estimate"]["verdict"] == "MISS"
    assert "Polls per accepted order | 1.1" in report.markdown(_results([slow]))


def test_no_limits_section_when_every_goal_is_met():
    text = report.markdown(_results([_run(), _run(2100.0), _run(1900.0)]))

    assert "What limits the missed goals" not in text
    assert "| Goal | Target | Measured (median) | Runs range | Result |" in text


def test_a_ratio_goal_is_the_median_of_the_ratios_measured_within_each_run_with_their_range():
    runs = [_run(400.0), _run(500.0), _run(300.0)]
    for run, accept in zip(runs, (180.0, 260.0, 240.0), strict=True):  # 0.45, 0.52, 0.80
        run["accept"]["rps"] = accept
    # The ratio of the medians (240 / 400 = 0.60) mixes two runs' machine states.

    row = _row(_results(runs), "accept_vs_health")

    assert row["value"] == 0.52
    assert row["verdict"] == "PASS"
    assert row["runs"] == [0.45, 0.52, 0.8]
    assert row["range"] == "0.45×–0.80× (3 runs)"


def test_the_baseline_ratio_compares_the_current_and_the_baseline_api_of_the_same_run():
    runs = [_run(), _run(), _run()]
    for run, old in zip(runs, (400.0, 500.0, 600.0), strict=True):
        run["baseline"]["floor"]["rps"] = old  # 1400 / old: 3.5, 2.8, 2.33

    row = _row(_results(runs), "event_read_vs_baseline")

    assert row["value"] == 2.8
    assert row["verdict"] == "PASS"
    assert "`df71965`" in row["goal"]


def test_a_run_without_a_baseline_leaves_its_goals_unmeasured():
    runs = [_run()]
    runs[0]["baseline"] = {}

    rows = {row["key"]: row for row in report.goals(_results(runs))}

    assert {rows[k]["verdict"] for k in rows if k.endswith("_vs_baseline")} == {"n/a"}


def test_one_dropped_request_in_the_flash_crowd_misses_its_goal():
    runs = [_run(), _run()]
    runs[1]["crowd"]["unanswered"] = 1

    row = _row(_results(runs), "crowd_answered")

    assert row["verdict"] == "MISS"
    assert row["value"] == 1


def test_the_sale_goal_is_ten_seconds_and_names_the_three_moments():
    runs = [_run()]
    runs[0]["sale"]["all_final_after_open_s"] = 10.5

    row = _row(_results(runs), "sale_final")

    assert row["verdict"] == "MISS"
    assert (
        "sold out 6.0 s, all final 10.5 s, last client saw its order final 7.0 s" in row["measured"]
    )


def test_the_naive_sold_out_flood_goal_is_three_times():
    runs = [_run()]
    runs[0]["naive"]["flood"]["rps"] = runs[0]["flood"]["rps"] / 2.9

    assert _row(_results(runs), "naive_flood")["verdict"] == "MISS"


def test_the_baseline_servers_memory_is_not_the_products():
    results = _results([_run()])
    results["peak_rss_mb"].append(
        {"name": "baseline-api", "role": "api child", "pid": 2, "rss_mb": 400.0}
    )

    row = _row(results, "peak_rss")

    assert row["verdict"] == "PASS"
    assert row["value"] == 100.0


def test_a_missing_stage_profile_misses_the_cpu_goal_and_says_why_in_the_table():
    results = _results([_run()])
    results["stage_profiles"]["accept"] = {
        "cpu_us_per_request": None,
        "stages": {},
        "error": "exit 1: boom",
    }

    assert _row(results, "cpu_per_request")["verdict"] == "MISS"
    assert "| accept | — | exit 1: boom |" in report.markdown(results)


def test_the_report_gives_cpu_per_request_and_stage_shares_for_each_endpoint():
    text = report.markdown(_results([_run()]))

    assert "## CPU per request, by endpoint" in text
    assert "| `GET /events/<id>/` (JWT) | 1400.0 | 1.0 | 500.0 | 100.0 | 1.0 |" in text
    assert "| Endpoint | CPU µs/request | sql | rendering | other |" in text
    assert "| poll_final | 500.0 | 40.0% | 20.0% | 40.0% |" in text


def test_a_missed_endpoint_goal_is_explained_with_its_cpu_and_top_stages():
    runs = [_run()]
    runs[0]["floor"]["rps"] = 100.0

    text = report.markdown(_results(runs))

    assert "### What limits the missed goals" in text
    assert "- **The event read** (event_read_vs_health" in text
    assert "largest stages are sql 40%, other 40%, rendering 20%" in text


def test_a_missed_sale_goal_is_explained_with_the_figures_of_the_same_run():
    results = json.loads(RESULTS.read_text())  # a real run's results, whichever shape is committed
    results["summary"]["sale"].update(all_final_after_open_s=40.0, sold_out_after_open_s=39.5)

    text = report.markdown(results)

    assert "### What limits the missed goals" in text
    assert "**Sale duration** is bound by the API's request rate" in text
    assert f"{results['summary']['sale']['all_rps_in_sale_window']} req/s" in text


def test_the_goals_and_their_targets_are_read_from_the_goals_file():
    spec = report.goals_load()
    accept = next(goal for goal in spec["goal"] if goal["key"] == "accept_vs_health")
    accept["target"] = 0.9  # the run measures 0.5

    rows = {row["key"]: row for row in report.goals(_results([_run()]), spec)}

    assert rows["accept_vs_health"]["verdict"] == "MISS"
    assert rows["accept_vs_health"]["target"] == "≥ 0.9×"
    assert spec["baseline"]["commit"] == "df71965"
