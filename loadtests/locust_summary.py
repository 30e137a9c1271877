"""Figures of a Locust flash sale (loadtests.run), computed as the benchmark computes its own.

The locustfile writes every purchase and poll in the CSV format of loadtests/loadgen.py,
so the sale window, rates and latency percentiles come from loadtests/analysis.py, the
benchmark's arithmetic, and sit beside docs/benchmarks/results.json's figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from loadtests.analysis import Samples, by_outcome, errors, latency_stats, window_rate
from loadtests.processes import ROOT

BENCH_RESULTS = ROOT / "docs" / "benchmarks" / "results.json"
FLOOD_WARMUP_SECONDS = 1.0  # polls of the last orders still run in the first second after sold out


def samples_load(directory: Path, merged: Path) -> Samples:
    """Every process's samples in one CSV (sorted by start time), loaded."""
    rows, header = [], None
    for path in sorted(directory.glob("samples-*.csv")):
        lines = path.read_text().splitlines()
        header = header or lines[0]
        rows += lines[1:]
    rows.sort(key=lambda line: float(line.split(",", 1)[0]))
    merged.write_text("\n".join([header or "t,latency,kind,outcome,qty,order_id", *rows]) + "\n")
    return Samples.load(merged)


def sale_figures(samples: Samples, cores: Callable[[float, float], dict]) -> dict:
    """The benchmark's sale and flood figures (loadtests/scenarios.py), from Locust's samples.

    `cores(start, stop)` gives the CPU cores used per role over a span (loadtests.run's meter).
    """
    buys = samples.mask(kind="buy")
    if not buys.any():
        return {"purchases": 0}
    open_at = float(samples.t[buys].min())  # the sale is open before the first user arrives
    sold_out = samples.mask(kind="buy", outcome="sold_out")
    sold_out_at = float(samples.end[sold_out].min()) if sold_out.any() else None
    window_end = sold_out_at or float(samples.end.max())
    in_window = samples.mask(kind="buy", start=open_at, stop=window_end)
    figures = {
        "sold_out_after_first_purchase_s": round(sold_out_at - open_at, 3) if sold_out_at else None,
        "sale_window_s": round(window_end - open_at, 3),
        "orders_won": int(samples.mask(kind="buy", outcome="accepted").sum()),
        "purchase_rps_in_sale_window": window_rate(samples, open_at, window_end, kind="buy"),
        "all_rps_in_sale_window": window_rate(samples, open_at, window_end),
        "purchase_latency_in_sale_window": latency_stats(samples.latency[in_window]),
        "purchases_by_outcome": by_outcome(samples, buys),
        "polls_by_outcome": by_outcome(samples, samples.mask(kind="poll")),
        "errors": errors(samples),
        "cpu_cores_in_sale_window": cores(open_at, window_end),
    }
    figures["sold_out"] = sold_out_at is not None
    start, stop = (sold_out_at or 0) + FLOOD_WARMUP_SECONDS, float(samples.end.max())
    if sold_out_at and stop - start >= 1.0:  # a flood cut short by --max-seconds says nothing
        flood = samples.mask(kind="buy", start=start) & (samples.end <= stop)
        figures["flood"] = {
            "seconds": round(stop - start, 2),
            "rps": round(float(flood.sum() / (stop - start)), 1) if stop > start else 0.0,
            **latency_stats(samples.latency[flood]),
            "cpu_cores": cores(start, stop),
        }
    figures["cpu_cores_whole_run"] = cores(open_at, float(samples.end.max()))
    return figures


def bench_comparison(figures: dict) -> list[dict]:
    """Locust's figures beside the committed benchmark's (summary.sale and summary.flood)."""
    if not BENCH_RESULTS.exists():
        return []
    bench = json.loads(BENCH_RESULTS.read_text()).get("summary", {})
    sale, flood = bench.get("sale", {}), bench.get("flood", {})

    def get(data, *keys):
        for key in keys:
            data = (data or {}).get(key)
        return data

    rows = [
        (
            "purchases/s in the sale window",
            get(figures, "purchase_rps_in_sale_window"),
            get(sale, "purchase_rps_in_sale_window"),
        ),
        (
            "purchase p50 ms (sale window)",
            get(figures, "purchase_latency_in_sale_window", "p50_ms"),
            get(sale, "purchase_latency_in_sale_window", "p50_ms"),
        ),
        (
            "purchase p99 ms (sale window)",
            get(figures, "purchase_latency_in_sale_window", "p99_ms"),
            get(sale, "purchase_latency_in_sale_window", "p99_ms"),
        ),
        (
            "poll p50 ms (final answer)",
            get(figures, "polls_by_outcome", "confirmed", "p50_ms"),
            get(sale, "polls_by_outcome", "confirmed", "p50_ms"),
        ),
        (
            "poll p99 ms (final answer)",
            get(figures, "polls_by_outcome", "confirmed", "p99_ms"),
            get(sale, "polls_by_outcome", "confirmed", "p99_ms"),
        ),
        ("sold-out flood req/s", get(figures, "flood", "rps"), get(flood, "rps")),
        ("sold-out flood p50 ms", get(figures, "flood", "p50_ms"), get(flood, "p50_ms")),
        (
            "load generator cores (sale)",
            get(figures, "cpu_cores_in_sale_window", "loadgen"),
            get(sale, "cpu_cores", "loadgen"),
        ),
        (
            "API cores (sale)",
            get(figures, "cpu_cores_in_sale_window", "api"),
            get(sale, "cpu_cores", "api"),
        ),
        # What a busy machine changes least: requests (purchases and polls) per core the API got.
        (
            "requests/s per API core (sale)",
            _per_core(
                figures.get("all_rps_in_sale_window"),
                get(figures, "cpu_cores_in_sale_window", "api"),
            ),
            _per_core(sale.get("all_rps_in_sale_window"), get(sale, "cpu_cores", "api")),
        ),
        (
            "other work on the machine, cores (sale)",
            get(figures, "cpu_cores_in_sale_window", "other"),
            get(sale, "cpu_cores", "other"),
        ),
    ]
    return [
        {
            "figure": name,
            "locust": mine,
            "benchmark": theirs,
            "ratio": round(mine / theirs, 2)
            if mine is not None and theirs and not name.startswith("other")
            else None,
        }
        for name, mine, theirs in rows
    ]


def _per_core(rate: float | None, cores: float | None) -> float | None:
    return round(rate / cores, 1) if rate is not None and cores else None


def markdown(summary: dict) -> str:
    f = summary.get("figures", {})
    lines = [
        "# Locust flash sale (python -m loadtests.run)",
        "",
        f"Command: `{summary['command']}`  ",
        f"Started: {summary['started']}, commit {summary['commit']}  ",
        f"Locust exit status {summary['locust_exit']}; invariants: {summary.get('invariants', {}).get('ok')}; "
        f"cores busy before the start: {summary.get('busy_cores_before_start')}",
        "",
        *([summary["note"], ""] if summary.get("note") else []),
        "| Figure | Locust | Benchmark (docs/benchmarks/results.json) | Ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['figure']} | {r['locust']} | {r['benchmark']} | {r['ratio']} |"
        for r in summary["comparison"]
    ]
    lines += [
        "",
        f"CPU cores in the sale window: {f.get('cpu_cores_in_sale_window')}",
        f"Purchases by outcome: { {k: v.get('count') for k, v in f.get('purchases_by_outcome', {}).items()} }",
        f"Polls by outcome: { {k: v.get('count') for k, v in f.get('polls_by_outcome', {}).items()} }",
        f"Errors: {f.get('errors')}",
        "",
    ]
    return "\n".join(lines)
