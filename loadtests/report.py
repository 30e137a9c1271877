"""results.json, report.md and the PNG charts of `python -m loadtests.bench`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RSS_LIMIT_MB = 150
NOISE_CORES = 0.25  # above this mean `other` CPU the report warns that the machine was busy
COMMIT_GOAL = 2000
FINAL_GOAL_S = 10
CROWD_ANSWER_S = 10

# Issue 9's request-rate goals: (key, goal, numerator, denominator, target). Every ratio is
# taken within one run (both sides saw the same machine), then the median over runs.
HEALTH_RATIOS = [
    ("sold_out_vs_health", "Sold-out refusal vs `GET /health/`", "flood.rps", 0.8),
    ("accept_vs_health", "Accept (202) vs `GET /health/`", "accept.rps", 0.4),
    (
        "event_read_vs_health",
        "Authenticated `GET /events/<id>/` vs `GET /health/`",
        "floor.rps",
        0.6,
    ),
    (
        "poll_pending_vs_health",
        "`GET /orders/<id>/` (pending) vs `GET /health/`",
        "poll_pending.rps",
        0.6,
    ),
    (
        "poll_final_vs_health",
        "`GET /orders/<id>/` (final) vs `GET /health/`",
        "poll_final.rps",
        0.6,
    ),
]
BASELINE_RATIOS = [
    ("sold_out_vs_baseline", "Sold-out refusal vs the baseline commit", "flood.rps", 2.5),
    ("accept_vs_baseline", "Accept (202) vs the baseline commit", "accept.rps", 3.0),
    ("event_read_vs_baseline", "`GET /events/<id>/` vs the baseline commit", "floor.rps", 2.0),
    ("poll_pending_vs_baseline", "Poll (pending) vs the baseline commit", "poll_pending.rps", 2.0),
    ("poll_final_vs_baseline", "Poll (final) vs the baseline commit", "poll_final.rps", 2.0),
]
# Endpoints of the CPU table: (label, scenario key, rps key, in-process profile name).
ENDPOINTS = [
    ("bare WSGI app (server ceiling)", "bare", "rps", None),
    ("`GET /health/`", "health", "rps", "health"),
    ("`GET /events/<id>/` (JWT)", "floor", "rps", "event_read"),
    ("purchase, sold out (409)", "flood", "rps", "sold_out"),
    ("purchase, accepted (202)", "accept", "rps", "accept"),
    ("`GET /orders/<id>/`, pending", "poll_pending", "rps", "poll_pending"),
    ("`GET /orders/<id>/`, final", "poll_final", "rps", "poll_final"),
    ("flash sale, all requests", "sale", "all_rps_in_sale_window", None),
    ("naive sale, all requests", "naive", "all_rps_in_sale_window", None),
    ("naive purchase, sold out", "naive.flood", "rps", None),
]
STAGES = (
    "server",
    "middleware",
    "authentication",
    "dispatch",
    "redis",
    "sql",
    "rendering",
    "other",
)


def _get(data: dict, path: str, default=None):
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _verdict(measured, target, *, at_least: bool) -> tuple[str, str]:
    """('PASS'|'MISS'|'n/a', 'by N%'): the margin relative to the target."""
    if measured is None:
        return "n/a", ""
    if at_least:
        ok, margin = measured >= target, (measured / target - 1) if target else 0
    elif not target:
        return ("PASS" if measured <= target else "MISS"), ""
    else:
        ok, margin = measured <= target, (target / measured - 1) if measured else float("inf")
    return ("PASS" if ok else "MISS"), (
        "" if margin == float("inf") else f"by {abs(margin) * 100:.0f}%"
    )


def _ratio(
    results: dict, numerator: str, denominator: str, unit: str
) -> tuple[float | None, str, list[float]]:
    """numerator / denominator measured within each run, then the median over runs.

    Ratios of one run share its machine state, so on a noisy machine the median of the
    per-run ratios is steadier than a ratio of medians taken from different runs.
    Returns (median, text, the per-run ratios)."""
    pairs = [(_get(run, numerator), _get(run, denominator)) for run in results.get("runs") or []]
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        s = results.get("summary") or {}
        a, b = _get(s, numerator), _get(s, denominator)
        pairs = [(a, b)] if a and b else []
    if not pairs:
        return None, "—", []
    ratios = [a / b for a, b in pairs]
    median = statistics.median(ratios)
    if len(pairs) == 1:
        a, b = pairs[0]
        return median, f"{a} / {b} {unit} = {median:.2f}×", ratios
    s = results.get("summary") or {}
    return (
        median,
        (f"{median:.2f}× (medians {_get(s, numerator)} / {_get(s, denominator)} {unit})"),
        ratios,
    )


def _per_run(results: dict, path: str) -> list[float]:
    values = [_get(run, path) for run in results.get("runs") or []]
    return [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    """'min–max (n runs)' of per-run values; '—' when there are none."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    if len(values) == 1:
        return f"{fmt.format(low)} (1 run)"
    return f"{fmt.format(low)}–{fmt.format(high)} ({len(values)} runs)"


# Issue 10: the place in line, measured on the sale (scenario b).
LINE_POLLS_GOAL = 1.3
LINE_SEEN_GOAL_S = 1.0
LINE_ESTIMATE_GOAL_S = 1.0


def _line_goals(results: dict, add) -> None:
    s = results.get("summary") or {}
    polls = _get(s, "sale.line.polls_per_accepted_order")
    add(
        "line_polls",
        "Sale: polls per accepted order, buyers honouring Retry-After",
        f"≤ {LINE_POLLS_GOAL}",
        polls,
        f"{polls} polls per order" if polls is not None else "—",
        LINE_POLLS_GOAL,
        False,
        _per_run(results, "sale.line.polls_per_accepted_order"),
    )
    seen = _get(s, "sale.line.final_to_seen_p50_s")
    add(
        "line_seen",
        "Sale: final in PostgreSQL → the buyer saw it, p50",
        f"≤ {LINE_SEEN_GOAL_S:.0f} s",
        seen,
        (f"p50 {seen} s, p90 {_get(s, 'sale.line.final_to_seen_p90_s')} s")
        if seen is not None
        else "—",
        LINE_SEEN_GOAL_S,
        False,
        _per_run(results, "sale.line.final_to_seen_p50_s"),
        "{:.2f} s",
    )
    error = _get(s, "sale.line.estimate_abs_error_median_s")
    add(
        "line_estimate",
        "Sale: the 202's estimated wait against the actual accept → final time, "
        "median absolute error",
        f"≤ {LINE_ESTIMATE_GOAL_S:.0f} s",
        error,
        (
            f"median {error} s, p90 {_get(s, 'sale.line.estimate_abs_error_p90_s')} s; "
            f"{_get(s, 'sale.line.estimates_null', 0)} of the accepts said null"
        )
        if error is not None
        else "—",
        LINE_ESTIMATE_GOAL_S,
        False,
        _per_run(results, "sale.line.estimate_abs_error_median_s"),
        "{:.2f} s",
    )


def goals(results: dict) -> list[dict]:
    """Every goal of the run: key, goal, target, measured (median), runs range, verdict."""
    s, scale = results.get("summary") or {}, results.get("scale_out") or {}
    rows = []

    def add(
        key, goal, target_text, measured, measured_text, target, at_least, per_run=(), fmt="{:.2f}"
    ):
        verdict, margin = _verdict(measured, target, at_least=at_least)
        rows.append(
            {
                "key": key,
                "goal": goal,
                "target": target_text,
                "measured": measured_text,
                "value": measured,
                "runs": [round(v, 3) for v in per_run],
                "range": _range(list(per_run), fmt),
                "verdict": verdict,
                "margin": margin,
            }
        )

    def add_ratio(key, goal, numerator, denominator, target, unit="req/s", at_least=True):
        value, text, per_run = _ratio(results, numerator, denominator, unit)
        sign = "≥" if at_least else "≤"
        add(key, goal, f"{sign} {target:g}×", value, text, target, at_least, per_run, "{:.2f}×")

    for key, goal, numerator, target in HEALTH_RATIOS:
        add_ratio(key, goal, numerator, "health.rps", target)
    commit = _get(s, "baseline.commit") or _get(results, "baseline.commit") or "baseline"
    for key, goal, numerator, target in BASELINE_RATIOS:
        add_ratio(
            key,
            goal.replace("the baseline commit", f"`{commit}`"),
            numerator,
            f"baseline.{numerator}",
            target,
        )
    final = _get(s, "sale.all_final_after_open_s")
    add(
        "sale_final",
        f"{_get(s, 'sale.tickets', 0):,} tickets sold out and every order final",
        f"≤ {FINAL_GOAL_S} s after opening",
        final,
        (
            f"sold out {_get(s, 'sale.sold_out_after_open_s')} s, all final {final} s, last client saw its order "
            f"final {_get(s, 'sale.client_saw_all_final_after_open_s')} s"
        )
        if final
        else "—",
        FINAL_GOAL_S,
        False,
        _per_run(results, "sale.all_final_after_open_s"),
        "{:.1f} s",
    )
    _line_goals(results, add)
    add_ratio(
        "naive_rps",
        "Queued vs naive: purchase req/s during the sale",
        "sale.purchase_rps_in_sale_window",
        "naive.purchase_rps_in_sale_window",
        1.5,
    )
    add_ratio(
        "naive_p99",
        "Queued vs naive: purchase p99 during the sale",
        "sale.purchase_latency_in_sale_window.p99_ms",
        "naive.purchase_latency_in_sale_window.p99_ms",
        0.5,
        unit="ms",
        at_least=False,
    )
    add_ratio(
        "naive_flood", "Queued vs naive: sold-out flood req/s", "flood.rps", "naive.flood.rps", 3.0
    )
    crowd = s.get("crowd") or {}
    missed = [
        (_get(run, "crowd.unanswered") or 0) + (_get(run, "crowd.answered_late") or 0)
        for run in results.get("runs") or []
        if _get(run, "crowd")
    ]
    add(
        "crowd_answered",
        f"Flash crowd: {crowd.get('connections', 2000):,} keep-alive connections on a sale, "
        f"every request answered within {CROWD_ANSWER_S} s",
        "0 unanswered",
        max(missed) if missed else None,
        (
            f"{max(missed)} unanswered or late of {crowd.get('requests')} requests (worst run); "
            f"p50 {_get(crowd, 'latency.p50_ms')} ms, p99 {_get(crowd, 'latency.p99_ms')} ms; "
            f"{crowd.get('busy_answers', 0)} busy (503) answers, {crowd.get('server_errors', 0)} 5xx without a code"
        )
        if missed
        else "—",
        0,
        False,
        missed,
        "{:.0f}",
    )
    measured_cpu = [
        label for label, key, _rps, _ in ENDPOINTS[1:7] if _get(s, f"{key}.api_cpu_ms_per_request")
    ]
    profiled = [k for k, v in (results.get("stage_profiles") or {}).items() if v.get("stages")]
    cpu_done = len(measured_cpu) == 6 and len(profiled) == 6
    rows.append(
        {
            "key": "cpu_per_request",
            "goal": "CPU ms per request for each endpoint, stage shares from a profile",
            "target": "reported",
            "value": int(cpu_done),
            "runs": [],
            "range": "—",
            "margin": "",
            "measured": (
                f"{len(measured_cpu)}/6 endpoints metered, {len(profiled)}/6 profiled "
                "(tables below)"
            )
            if s
            else "—",
            "verdict": "PASS" if cpu_done else "MISS" if s else "n/a",
        }
    )
    peak = max(_product_rss(results), key=lambda e: e["rss_mb"], default=None)
    add(
        "peak_rss",
        "Peak RSS of each API / Celery process",
        f"< {RSS_LIMIT_MB} MB",
        peak and peak["rss_mb"],
        f"max {peak['rss_mb']} MB ({peak['name']}, {peak['role']})" if peak else "—",
        RSS_LIMIT_MB,
        False,
    )
    drain = _get(scale, "one_event/x2.orders_per_s")
    best = max((v["orders_per_s"] for v in scale.values()), default=None)
    add(
        "backlog_commit",
        "Workers commit from a backlog (one hot event, 2 processes)",
        f"≥ {COMMIT_GOAL:,} orders/s",
        drain,
        f"{drain:,.0f} orders/s (best shape/processes: {best:,.0f})" if drain else "—",
        COMMIT_GOAL,
        True,
    )
    broken, checked = results.get("invariant_broken"), bool(s)
    rows.append(
        {
            "key": "invariants",
            "goal": "Zero oversold / lost / pending; gate == total - sold (every scenario)",
            "target": "0 broken",
            "runs": [],
            "range": "—",
            "measured": "BROKEN (see top)" if broken else "all invariants held" if checked else "—",
            "value": int(bool(broken)),
            "margin": "",
            "verdict": "FAIL" if broken else "PASS" if checked else "n/a",
        }
    )
    return rows


def _product_rss(results: dict) -> list[dict]:
    """Peak RSS entries of this commit's processes (the baseline commit's server is not the product)."""
    return [e for e in results.get("peak_rss_mb") or [] if not e["name"].startswith("baseline")]


SCENARIOS = (
    "bare",
    "health",
    "floor",
    "accept",
    "poll_pending",
    "poll_final",
    "sale",
    "flood",
    "naive",
    "crowd",
)


def noise_cores(results: dict) -> float:
    """Mean CPU (cores) used by processes outside the benchmark during the per-run scenarios."""
    s = results.get("summary") or {}
    values = [
        s[name]["cpu_cores"].get("other", 0.0)
        for name in SCENARIOS
        if name in s and "cpu_cores" in s[name]
    ]
    return sum(values) / len(values) if values else 0.0


def _code(results: dict) -> str:
    code = results.get("code") or {}
    dirty = code.get("uncommitted_product_files") or []
    return f"`{code.get('commit', '?')}`" + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def _lat_row(name: str, stats: dict | None) -> str:
    stats = stats or {}
    cells = [stats.get(k, "—") for k in ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms")]
    return f"| {name} | " + " | ".join(str(c) for c in cells) + " |"


LAT_HEAD = "| | requests | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|"


def _steady_table(title: str, data: dict) -> list[str]:
    lines = [
        title,
        "",
        f"**{data.get('rps')} req/s** over {data.get('seconds')} s (first second left out), "
        f"{data.get('errors', 0)} errors.",
        "",
        LAT_HEAD,
        _lat_row("all", data),
    ]
    for outcome, stats in (data.get("by_outcome") or {}).items():
        lines.append(_lat_row(f"`{outcome}`", stats))
    return lines + [""]


def markdown(results: dict) -> str:
    s = results.get("summary") or {}
    runs = len(results.get("runs") or [])
    lines = ["# Flash-sale benchmark: the hot path, the baseline commit and a naive design", ""]
    if results.get("failure"):
        lines += ["> **THE RUN FAILED** — " + results["failure"].splitlines()[0], ""]
    noise = noise_cores(results)
    if noise > NOISE_CORES:
        lines += [
            f"> **Noisy machine:** other work used {noise:.2f} cores on average during the scenarios "
            "(column `other` below), so absolute figures are low; compare the ratios, or re-run "
            "when the machine is quiet.",
            "",
        ]
    baseline = results.get("baseline") or {}
    lines += [
        f"Command: `{results['command']}` — commit {_code(results)}, {results['started']}, "
        f"{results['wall_seconds']} s wall, "
        f"{runs} run(s){' (medians)' if runs > 1 else ''}. Machine: {results['machine']['cpus']} cores shared by "
        "the load generator, the API server (granian, `python -m core.serve`), Celery, PostgreSQL and Redis "
        f"(all on 127.0.0.1). Concurrency {results['args']['concurrency']} closed-loop clients, "
        f"{results['args']['buyers']} buyers."
        + (
            f" Baseline: commit `{baseline['commit']}` served by {baseline.get('server', 'its own server')}, "
            "measured right after each current measurement on the same database and Redis."
            if baseline
            else ""
        ),
        "",
    ]
    if s.get("bare") or s.get("health"):
        lines += [
            "**References** (same server configuration as the product, 2 workers): bare WSGI app "
            f"**{_get(s, 'bare.rps')} req/s** (runs {_range(_per_run(results, 'bare.rps'), '{:.0f}')}; "
            f"the load generator used {_get(s, 'bare.cpu_cores.loadgen')} cores: it, not the server, bounds "
            f"this figure on {results['machine']['cpus']} cores), `GET /health/` **{_get(s, 'health.rps')} req/s** "
            f"(runs {_range(_per_run(results, 'health.rps'), '{:.0f}')}).",
            "",
        ]
    lines += [
        "## Goals",
        "",
        "| Goal | Target | Measured (median) | Runs range | Result |",
        "|---|---|---|---|---|",
    ]
    rows = goals(results)
    for row in rows:
        lines.append(
            f"| {row['goal']} | {row['target']} | {row['measured']} | {row['range']} | "
            f"**{row['verdict']}** {row['margin']} |"
        )
    lines += [""]
    lines += _limits_section(results, {row["key"] for row in rows if row["verdict"] == "MISS"})
    lines += _cpu_section(results)
    lines += _stage_section(results)
    if s:
        for key, title in (
            ("floor", "## a. Authenticated `GET /events/<id>/`"),
            ("accept", "## a′. Accept path: purchases that are all accepted (no polling)"),
        ):
            if s.get(key):
                lines += _steady_table(title, s[key])
        if s.get("accept"):
            lines += [
                f"Workers committed these at {_get(s, 'accept.commit.orders_per_s')} orders/s while the load ran, "
                f"in {_get(s, 'accept.commit.batches')} batches ({_get(s, 'accept.commit.orders_per_batch')} "
                "orders per batch) "
                f"(accept → final p50 {_get(s, 'accept.commit.accept_to_final_p50_ms')} ms, "
                f"p99 {_get(s, 'accept.commit.accept_to_final_p99_ms')} ms).",
                "",
            ]
        lines += _poll_section(s)
        if s.get("sale"):
            lines += _sale_section(s)
        if s.get("flood"):
            lines += _steady_table("## c. Sold-out flood", s["flood"])
        if s.get("sale") and s.get("naive"):
            lines += _naive_section(s)
        lines += _crowd_section(s)
        lines += _baseline_section(results)
    lines += _scale_section(results.get("scale_out") or {})
    lines += _resources_section(results)
    lines += [
        "## Charts",
        "",
        "![Requests/s and tickets over time](sale_timeline.png)",
        "",
        "![Latency percentiles per outcome](latency_percentiles.png)",
        "",
        "![Commit throughput from a backlog](scale_out.png)",
        "",
        "## Method",
        "",
        METHOD,
    ]
    return "\n".join(lines) + "\n"


def _cpu_section(results: dict) -> list[str]:
    """req/s and API CPU per request for each endpoint, here and at the baseline commit."""
    s = results.get("summary") or {}
    if not s:
        return []
    profiles = results.get("stage_profiles") or {}
    base = s.get("baseline") or {}
    lines = [
        "## CPU per request, by endpoint",
        "",
        "API CPU ms per request = CPU seconds of the API server's processes during the scenario / "
        "requests it served (psutil; only the server under load works meanwhile). In-process µs: "
        "`python -m loadtests.inprocess` through the WSGI handler without a server (see stage profiles).",
        "",
        "| Endpoint | req/s | API CPU ms/request | in-process CPU µs/request | baseline req/s | "
        "baseline API CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key, rps_key, profile in ENDPOINTS:
        data = _get(s, key)
        if not data:
            continue
        in_process = _get(profiles, f"{profile}.cpu_us_per_request") if profile else None
        base_data = (
            base.get(key)
            if key in ("floor", "accept", "poll_pending", "poll_final", "flood")
            else None
        )
        cells = [
            _get(data, rps_key),
            data.get("api_cpu_ms_per_request"),
            in_process,
            _get(base_data or {}, "rps"),
            _get(base_data or {}, "api_cpu_ms_per_request"),
        ]
        lines.append(
            f"| {label} | " + " | ".join("—" if c is None else str(c) for c in cells) + " |"
        )
    return lines + [""]


def _stage_section(results: dict) -> list[str]:
    profiles = results.get("stage_profiles") or {}
    if not profiles:
        return []
    seen = [
        stage
        for stage in STAGES
        if any(stage in (p.get("stages") or {}) for p in profiles.values())
    ]
    extra = sorted({st for p in profiles.values() for st in (p.get("stages") or {})} - set(seen))
    columns = seen + extra
    lines = [
        "## Stage shares of each endpoint (in-process cProfile, self time)",
        "",
        "From `python -m loadtests.inprocess --only E --profile E`, run after the measurements on a "
        "database of its own; its lines `stage  pct%` are read as printed.",
        "",
        "| Endpoint | CPU µs/request | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for endpoint, profile in profiles.items():
        stages = profile.get("stages") or {}
        if not stages:
            lines.append(
                f"| {endpoint} | — | {profile.get('error', 'no profile')} |"
                + " |" * (len(columns) - 1)
            )
            continue
        cells = [f"{stages[c]:.1f}%" if c in stages else "—" for c in columns]
        lines.append(
            f"| {endpoint} | {profile.get('cpu_us_per_request') or '—'} | "
            + " | ".join(cells)
            + " |"
        )
    return lines + [""]


def _poll_section(s: dict) -> list[str]:
    lines = []
    for key, title in (
        ("poll_pending", "## p. `GET /orders/<id>/` by its owner, order pending"),
        ("poll_final", "## p′. `GET /orders/<id>/` by its owner, order confirmed"),
    ):
        data = s.get(key)
        if not data:
            continue
        lines += _steady_table(title, data)
        lines += [
            f"{data.get('orders')} orders, one per buyer, each read by its owner; "
            f"{data.get('orders_still_in_status_after')} of them still in that status after the scenario "
            "(no drain is queued for the pending ones).",
            "",
        ]
    return lines


def _baseline_section(results: dict) -> list[str]:
    s = results.get("summary") or {}
    base = s.get("baseline") or {}
    if not [k for k in base if isinstance(base.get(k), dict)]:
        return []
    lines = [
        f"## g. Side by side with commit `{base.get('commit')}` (same run, same data)",
        "",
        "Each baseline measurement ran right after the current one; its accepted orders were drained by "
        "the current worker (same task name and queue) and the same invariants were checked.",
        "",
        "| Endpoint | current req/s | baseline req/s | × | current p99 ms | baseline p99 ms | baseline errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in (
        ("sold-out refusal", "flood"),
        ("accept (202)", "accept"),
        ("`GET /events/<id>/`", "floor"),
        ("poll, pending", "poll_pending"),
        ("poll, final", "poll_final"),
    ):
        cur, old = s.get(key) or {}, base.get(key) or {}
        ratio = f"{cur['rps'] / old['rps']:.2f}" if cur.get("rps") and old.get("rps") else "—"
        lines.append(
            f"| {label} | {cur.get('rps', '—')} | {old.get('rps', '—')} | {ratio} | "
            f"{cur.get('p99_ms', '—')} | {old.get('p99_ms', '—')} | {old.get('errors', '—')} |"
        )
    return lines + [""]


def _crowd_section(s: dict) -> list[str]:
    crowd = s.get("crowd")
    if not crowd:
        return []
    lines = [
        f"## f. Flash crowd: {crowd.get('connections') or 0:,} keep-alive connections on a sale",
        "",
        f"{crowd.get('tickets') or 0:,} tickets; every client holds one connection, buys from 1 s before the "
        f"opening until it sees `sold_out` (+1 s) and polls as the Locust buyer does. A request is answered "
        f"when the API sends any HTTP response within {CROWD_ANSWER_S} s (a 503 with `Retry-After` and a "
        "`code` included).",
        "",
        "| | |",
        "|---|---:|",
        f"| Requests | {crowd.get('requests')} |",
        f"| Unanswered (socket errors, time-outs) | {crowd.get('unanswered')} |",
        f"| Answered later than {CROWD_ANSWER_S} s | {crowd.get('answered_late')} |",
        f"| Busy answers (503 + Retry-After + code) | {crowd.get('busy_answers')} |",
        f"| 5xx without a code | {crowd.get('server_errors')} |",
        f"| Latency p50 / p90 / p99 / max ms | {_get(crowd, 'latency.p50_ms')} / {_get(crowd, 'latency.p90_ms')} / "
        f"{_get(crowd, 'latency.p99_ms')} / {_get(crowd, 'latency.max_ms')} |",
        f"| Sold out / all final after opening | {crowd.get('sold_out_after_open_s')} s / "
        f"{crowd.get('all_final_after_open_s')} s |",
        f"| Errors by kind | {crowd.get('errors') or 0} |",
        "",
    ]
    return lines


def _api_ms_per_request(data: dict, rps_key: str) -> float | None:
    """Milliseconds of API CPU per request: API cores busy / requests per second."""
    cores, rps = _get(data, "cpu_cores.api"), _get(data, rps_key)
    return round(cores / rps * 1000, 2) if cores and rps else None


def _limits_section(results: dict, missed: set[str]) -> list[str]:
    """For each missed goal (by key), what the same run says limits it (profiles: bottlenecks.md)."""
    s = results.get("summary") or {}
    if not s or not missed:
        return []
    sale, naive = s.get("sale") or {}, s.get("naive") or {}
    floor_ms = _api_ms_per_request(s.get("floor") or {}, "rps")
    lines = ["### What limits the missed goals", ""]
    if "sale_final" in missed:
        total = round(
            (_get(sale, "all_rps_in_sale_window") or 0) * (_get(sale, "sale_window_s") or 0)
        )
        lines.append(
            f"- **Sale duration** is bound by the API's request rate: the sale took about {total:,} requests "
            f"(purchases and one poll per order) at {_get(sale, 'all_rps_in_sale_window')} req/s, with the API "
            f"processes busy {_get(sale, 'cpu_cores.api')} cores "
            f"({_api_ms_per_request(sale, 'all_rps_in_sale_window')} ms of API CPU per request; the floor GET "
            f"costs {floor_ms} ms) and the load generator {_get(sale, 'cpu_cores.loadgen')}, on "
            f"{results['machine']['cpus']} cores. The commit side was not the limit: workers busy "
            f"{_get(sale, 'cpu_cores.worker')} cores, accept → final p50 "
            f"{_get(sale, 'commit.accept_to_final_p50_ms')} ms, last order final "
            f"{round((_get(sale, 'all_final_after_open_s') or 0) - (_get(sale, 'sold_out_after_open_s') or 0), 3)} s "
            "after the last ticket was sold."
        )
    if missed & {"naive_rps", "naive_p99"}:
        waits = _get(naive, "pg_lock_waits.share_of_samples_with_waiters")
        lines.append(
            f"- **Queued vs naive**: the naive design was not held up by its row lock (waiters in "
            f"{round((waits or 0) * 100)}% of samples, at most {_get(naive, 'pg_lock_waits.max_waiting_backends')} "
            f"waiting backend) but by API CPU, like the queued design: {_api_ms_per_request(naive, 'purchase_rps_in_sale_window')} "
            f"ms of API CPU per naive purchase against {_api_ms_per_request(sale, 'purchase_rps_in_sale_window')} "
            "ms per queued purchase including its poll. With as many API processes as cores, at most that many "
            "naive transactions queue on the event row; the queued design's advantage, refusing without SQL, "
            "shows in the sold-out path, not in the accepted one."
        )
    lines += _endpoint_limits(results, missed)
    if len(lines) == 2:
        return []
    lines += [
        "",
        "Profiles (`--profile`, py-spy) and what-ifs: [bottlenecks.md](bottlenecks.md), "
        "[profiles.md](profiles.md).",
        "",
    ]
    return lines


# goal key -> (endpoint label, scenario key, in-process profile name)
_ENDPOINT_OF_GOAL = {
    "sold_out": ("the sold-out refusal", "flood", "sold_out"),
    "accept": ("the accept path", "accept", "accept"),
    "event_read": ("the event read", "floor", "event_read"),
    "poll_pending": ("the pending poll", "poll_pending", "poll_pending"),
    "poll_final": ("the final poll", "poll_final", "poll_final"),
}


def _endpoint_limits(results: dict, missed: set[str]) -> list[str]:
    """One line per endpoint with a missed request-rate goal: its CPU against /health/'s, its top stages."""
    s, profiles = results.get("summary") or {}, results.get("stage_profiles") or {}
    health_ms = _get(s, "health.api_cpu_ms_per_request")
    lines = []
    for prefix, (label, key, profile) in _ENDPOINT_OF_GOAL.items():
        keys = [k for k in (f"{prefix}_vs_health", f"{prefix}_vs_baseline") if k in missed]
        if not keys:
            continue
        ms, base_ms = (
            _get(s, f"{key}.api_cpu_ms_per_request"),
            _get(s, f"baseline.{key}.api_cpu_ms_per_request"),
        )
        stages = sorted((_get(profiles, f"{profile}.stages") or {}).items(), key=lambda kv: -kv[1])[
            :3
        ]
        top = ", ".join(f"{stage} {share:.0f}%" for stage, share in stages) or "no profile"
        lines.append(
            f"- **{label.capitalize()}** ({', '.join(keys)}): {ms} ms of API CPU per request against "
            f"{health_ms} ms for `/health/`"
            + (f" and {base_ms} ms at the baseline commit" if base_ms else "")
            + f"; in-process, the largest stages are {top}."
        )
    return lines


def _sale_section(s: dict) -> list[str]:
    sale = s["sale"]
    lines = [
        "## b. Flash sale (queued design)",
        "",
        f"{_get(sale, 'tickets', 0):,} tickets, 1–4 per request; clients start {1:.0f} s before the opening and keep "
        "buying until they see `sold_out` (+1 s), then poll their orders honouring `Retry-After`.",
        "",
        "| | |",
        "|---|---:|",
        f"| Sold out after opening | {_get(sale, 'sold_out_after_open_s')} s |",
        f"| Every order final after opening (PostgreSQL) | {_get(sale, 'all_final_after_open_s')} s |",
        f"| Last client saw its order final | {_get(sale, 'client_saw_all_final_after_open_s')} s |",
        f"| Purchase req/s, opening → sold out | {_get(sale, 'purchase_rps_in_sale_window')} |",
        f"| All req/s incl. polls, opening → sold out | {_get(sale, 'all_rps_in_sale_window')} |",
        f"| Orders accepted | {_get(sale, 'orders_won', 0):,} |",
        f"| Worker commits during the sale | {_get(sale, 'commit.orders_per_s')} orders/s "
        f"(peak {_get(sale, 'commit.peak_orders_in_1s')} in 1 s) |",
        f"| Commit batches (orders per batch) | {_get(sale, 'commit.batches')} "
        f"({_get(sale, 'commit.orders_per_batch')}) |",
        f"| Accept → final | p50 {_get(sale, 'commit.accept_to_final_p50_ms')} ms, "
        f"p99 {_get(sale, 'commit.accept_to_final_p99_ms')} ms |",
        f"| Polls per accepted order | {_get(sale, 'line.polls_per_accepted_order')} |",
        f"| Final in PostgreSQL → buyer saw it | p50 {_get(sale, 'line.final_to_seen_p50_s')} s, "
        f"p90 {_get(sale, 'line.final_to_seen_p90_s')} s |",
        f"| Estimated wait at accept vs actual accept → final, absolute error | median "
        f"{_get(sale, 'line.estimate_abs_error_median_s')} s, p90 "
        f"{_get(sale, 'line.estimate_abs_error_p90_s')} s "
        f"({_get(sale, 'line.estimates_null')} accepts said null) |",
        f"| Errors | {_get(sale, 'errors') or 0} |",
        "",
        LAT_HEAD,
    ]
    for outcome, stats in (sale.get("purchases_by_outcome") or {}).items():
        lines.append(_lat_row(f"purchase `{outcome}`", stats))
    for outcome, stats in (sale.get("polls_by_outcome") or {}).items():
        lines.append(_lat_row(f"poll → `{outcome}`", stats))
    return lines + [""]


def _naive_section(s: dict) -> list[str]:
    q, n = s["sale"], s["naive"]
    rows = [
        ("Purchase req/s, opening → sold out", "purchase_rps_in_sale_window"),
        ("Purchase p50 ms in that window", "purchase_latency_in_sale_window.p50_ms"),
        ("Purchase p99 ms in that window", "purchase_latency_in_sale_window.p99_ms"),
        ("Sold out after opening, s", "sold_out_after_open_s"),
        ("Every order final after opening, s", "all_final_after_open_s"),
        ("Orders won", "orders_won"),
    ]
    lines = [
        "## d. Queued vs naive, same sale, same concurrency",
        "",
        "The naive design commits the purchase inside the request under `select_for_update` "
        "(loadtests/naive, a second API server with the same configuration). Its clients need no polling; "
        "the queued clients' polls are extra load on the same 2 cores. After its sale, the naive API "
        "gets the same sold-out flood as the queued one.",
        "",
        "| | queued | naive |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {_get(q, key)} | {_get(n, key)} |" for label, key in rows]
    lines.append(f"| Sold-out flood req/s | {_get(s, 'flood.rps')} | {_get(n, 'flood.rps')} |")
    lines.append(
        f"| Sold-out flood p99 ms | {_get(s, 'flood.p99_ms')} | {_get(n, 'flood.p99_ms')} |"
    )
    lines += ["", LAT_HEAD]
    for outcome, stats in (n.get("purchases_by_outcome") or {}).items():
        lines.append(_lat_row(f"naive `{outcome}`", stats))
    return lines + [""]


def _scale_section(scale: dict) -> list[str]:
    if not scale:
        return []
    lines = [
        "## e. Scale-out: draining a backlog of pending orders",
        "",
        "Pending orders inserted with one SQL statement (gate rebuilt from PostgreSQL), then a "
        "worker with N prefork processes started and the drain task(s) published; timed from "
        "publication to the last `finalized_at`.",
        "",
        "Broker and Redis: the run's own (Redis as broker, one Redis) unless "
        "`--scale-out-engines` added series (RabbitMQ quorum queues; a three-node Redis "
        "Cluster, the events' gates on the nodes counted in the last column).",
        "",
        "| Shape | Broker | Redis | Processes | Orders | Seconds | Orders/s "
        "| CPU cores: worker / postgres | Redis nodes |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for row in scale.values():
        cpu = row["cpu_cores"]
        lines.append(
            f"| {row['shape']} | {row.get('broker', 'redis')} | {row.get('topology', 'single')} "
            f"| {row['processes']} | {row['orders']:,} | {row['seconds']} | "
            f"{row['orders_per_s']:,.0f} | {cpu.get('worker', 0)} / {cpu.get('postgres', 0)} "
            f"| {row.get('redis_nodes', 1)} |"
        )
    return lines + [""]


def _resources_section(results: dict) -> list[str]:
    lines = [
        "## Processes: peak RSS (sampled every 0.2 s)",
        "",
        "| Process | Role | pid | Peak RSS MB |",
        "|---|---|---:|---:|",
    ]
    peaks = (
        results.get("peak_rss_mb") or []
    )  # the baseline commit's processes included, not in the goal
    for entry in peaks:
        lines.append(
            f"| {entry['name']} | {entry['role']} | {entry.get('pid', '')} | {entry['rss_mb']} |"
        )
    s = results.get("summary") or {}
    if s:
        lines += [
            "",
            "## CPU (cores busy on average) and PostgreSQL lock waits per scenario",
            "",
            "`other` is CPU used on the machine by none of the listed roles (noise from other work).",
            "",
            "| Scenario | api | worker | postgres | redis | loadgen | other | lock-wait samples | "
            "max waiting backends |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        names = [name for name in SCENARIOS if s.get(name)] + (
            ["naive.flood"] if _get(s, "naive.flood") else []
        )
        names += [
            f"baseline.{name}"
            for name in ("floor", "accept", "poll_pending", "poll_final", "flood")
            if _get(s, f"baseline.{name}")
        ]
        for name in names:
            data = _get(s, name)
            cpu, locks = data.get("cpu_cores", {}), data.get("pg_lock_waits", {})
            lines.append(
                f"| {name} | {cpu.get('api', 0)} | {cpu.get('worker', 0)} | {cpu.get('postgres', 0)} | "
                f"{cpu.get('redis', 0)} | {cpu.get('loadgen', 0)} | {cpu.get('other', 0)} | "
                f"{locks.get('share_of_samples_with_waiters', 0) * 100:.0f}% | "
                f"{locks.get('max_waiting_backends', 0)} |"
            )
        waits = {
            name: (s.get(name) or {}).get("pg_lock_waits", {}).get("top_waits")
            for name in ("accept", "sale", "naive")
        }
        lines += ["", "Most frequent lock waits (wait event: query), by samples:", ""]
        for name, top in waits.items():
            for query, count in (top or {}).items():
                lines.append(f"- {name}: `{query}` × {count}")
    return lines + [""]


METHOD = """- Load: `loadtests/loadgen.py`, gevent + geventhttpclient, one process, closed loop (each client
  sends its next request when the previous one answered) over keep-alive connections. It shares
  the 2 cores with the servers: the bare-app reference is bounded by it (see its `loadgen` CPU).
- The API runs as production does (`python -m core.serve`: granian, 2 workers); the bare WSGI app
  (loadtests/bare.py) and the naive design run on the same server configuration. The baseline
  commit runs from a temporary `git worktree` with its own server (gunicorn sync, its
  gunicorn.conf.py, 2 workers), on this run's database, Redis DB and signing key, in the same
  virtualenv; each of its measurements follows the current one, so both see the same machine.
- Buyers log in once through `POST /login/` before any measurement; tokens are reused. The bench
  stack hashes passwords with MD5 (DJANGO_PASSWORD_HASHERS) so that this preparation does not cost
  minutes of PBKDF2; no measured request checks a password.
- With `--runs N`, every figure is the median over the runs, except the ratio goals: each ratio is
  taken within one run (both sides saw the same machine) and the median of those ratios is reported;
  "Runs range" gives the lowest and highest per-run value.
- Steady-state figures (references, floor, accept, polls, floods) leave out the first second. Sale
  figures are taken between the opening (`sale_starts_at`) and the first `sold_out` answer.
- Polls: one order per buyer inserted through the ORM (pending, or confirmed with `finalized_at`),
  each read by its owner; every order is read once before the timing starts (an order accepted
  through the API is answered from what its purchase left in Redis). No drain is queued for the
  pending event, and the report says how many were still pending afterwards.
- Flash crowd: the sale again with `--crowd` clients (one keep-alive connection each, RLIMIT_NOFILE
  raised in the harness and the load generator), a 10 s network time-out per request; a 503 with a
  `code` is an answer and its Retry-After is honoured.
- Invariants after every sale, accept and flood scenario (baseline ones included): `sum(confirmed
  quantity) == event.tickets_sold == sum(ticket quantity)`, one ticket row per confirmed order, no
  pending order, Redis `remaining == total - sold`, every order a client was told about exists, every
  ticket sold once clients hear sold_out.
- Throttle rates are set to 1,000,000/min, LOG_LEVEL=WARNING, DEBUG off, PROMETHEUS_MULTIPROC_DIR set
  (as `make run`). No beat process runs (no reconciliation during measurements).
- CPU columns are cores busy on average (psutil, per process tree); `other` is noise from other work
  on the machine. API CPU per request is the `api` role's CPU seconds over the requests served.
  Stage shares come from `python -m loadtests.inprocess` (cProfile, in-process, no server);
  `--profile` adds py-spy wall-clock profiles of the API and worker processes (profiles.md).
"""


def console_summary(results: dict) -> str:
    lines = ["", "Goals:"]
    if noise_cores(results) > NOISE_CORES:
        lines.insert(
            1, f"(noisy machine: other work used {noise_cores(results):.2f} cores on average)"
        )
    for row in goals(results):
        lines.append(
            f"  {row['verdict']:<5} {row['margin']:<9} {row['goal']}: {row['measured']} "
            f"(target {row['target']})"
        )
    return "\n".join(lines)


def write(results: dict, last_run: dict | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "goals": goals(results)}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(markdown(results))
    if last_run:
        from loadtests import charts

        charts.write_all(last_run, results.get("scale_out") or {}, out)
