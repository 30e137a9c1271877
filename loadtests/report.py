"""results.json, report.md and the PNG charts of `python -m loadtests.bench`.

The goals (which figures, their targets, their wording) are data: loadtests/goals.toml,
or the file given with `--goals`. This module computes each goal's value and verdict and
lays out the figures of the run; the texts below take {PATH} placeholders (see _fill).
"""

from __future__ import annotations

import json
import re
import statistics
import tomllib
from pathlib import Path

GOALS = Path(__file__).resolve().parent / "goals.toml"
NOISE_CORES = 0.25  # above this mean `other` CPU the report warns that the machine was busy
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
STAGES = "server middleware authentication dispatch redis sql rendering other".split()
SCENARIOS = "bare health floor accept poll_pending poll_final sale flood naive crowd".split()
BASELINE_SCENARIOS = ("floor", "accept", "poll_pending", "poll_final", "flood")
LAT_HEAD = "| | requests | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|"


def goals_load(path: Path = GOALS) -> dict:
    return tomllib.loads(Path(path).read_text())


def _get(data: dict, path: str, default=None):
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _fill(text: str, view: dict) -> str:
    """Replace {PATH}, {PATH:format} and {PATH|default} with figures of `view`."""

    def one(match: re.Match) -> str:
        path, default, spec = match.groups()
        value = _get(view, path)
        if default is not None and (value is None or value == {}):
            value = int(default) if default.isdigit() else default
        return format(value, spec) if spec and value is not None else str(value)

    return re.sub(r"\{([\w./]+)(?:\|([^:}]*))?(?::([^}]*))?\}", one, text)


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
    by = "" if margin == float("inf") else f"by {abs(margin) * 100:.0f}%"
    return ("PASS" if ok else "MISS"), by


def _ratio(results: dict, numerator: str, denominator: str, unit: str):
    """numerator / denominator measured within each run, then the median over runs.

    Ratios of one run share its machine state, so on a noisy machine the median of the
    per-run ratios is steadier than a ratio of medians taken from different runs.
    Returns (median, text, the per-run ratios)."""
    s = results.get("summary") or {}
    pairs = [(_get(run, numerator), _get(run, denominator)) for run in results.get("runs") or []]
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        a, b = _get(s, numerator), _get(s, denominator)
        pairs = [(a, b)] if a and b else []
    if not pairs:
        return None, "—", []
    ratios = [a / b for a, b in pairs]
    median = statistics.median(ratios)
    if len(pairs) == 1:
        a, b = pairs[0]
        return median, f"{a} / {b} {unit} = {median:.2f}×", ratios
    medians = f"medians {_get(s, numerator)} / {_get(s, denominator)} {unit}"
    return median, f"{median:.2f}× ({medians})", ratios


def _per_run(results: dict, paths: list[str]) -> list[float]:
    """Per run, the sum of `paths` (runs that have the first path's scenario only)."""
    values = []
    for run in results.get("runs") or [] if paths else []:
        if len(paths) > 1:
            if _get(run, paths[0].split(".")[0]):
                values.append(sum(_get(run, p) or 0 for p in paths))
            continue
        value = _get(run, paths[0])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(value)
    return values


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    """'min–max (n runs)' of per-run values; '—' when there are none."""
    if not values:
        return "—"
    low, high = min(values), max(values)
    if len(values) == 1:
        return f"{fmt.format(low)} (1 run)"
    return f"{fmt.format(low)}–{fmt.format(high)} ({len(values)} runs)"


def _derived(results: dict) -> dict:
    """The summary's figures, plus those the goals file may name that take more than a path."""
    s, scale = results.get("summary") or {}, results.get("scale_out") or {}
    metered = [k for _l, k, _r, _p in ENDPOINTS[1:7] if _get(s, f"{k}.api_cpu_ms_per_request")]
    profiled = [k for k, v in (results.get("stage_profiles") or {}).items() if v.get("stages")]
    broken = results.get("invariant_broken")
    return {
        **s,
        "scale_out": scale,
        "baseline_commit": _get(s, "baseline.commit")
        or _get(results, "baseline.commit")
        or "baseline",
        "peak_rss": max(_product_rss(results), key=lambda e: e["rss_mb"], default=None),
        "best_drain": max((v["orders_per_s"] for v in scale.values()), default=None),
        "endpoints_metered": len(metered),
        "endpoints_profiled": len(profiled),
        "cpu_unreported": (12 - len(metered) - len(profiled)) if s else None,
        "invariants_broken": 1 if broken else 0 if s else None,
    }


def goals(results: dict, spec: dict | None = None) -> list[dict]:
    """Every goal of the goals file: key, goal, target, measured (median), runs range, verdict."""
    spec, view = spec or goals_load(), _derived(results)
    rows = []
    for goal in spec["goal"]:
        target, at_least = goal["target"], goal.get("at_least", False)
        fmt = goal.get("fmt", "{:.2f}×" if "ratio" in goal else "{:.2f}")
        if "ratio" in goal:
            value, measured, per_run = _ratio(results, *goal["ratio"], goal.get("unit", "req/s"))
            target_text = goal.get("target_text", f"{'≥' if at_least else '≤'} {target:g}×")
        else:
            per_run = _per_run(results, goal.get("per_run", [goal.get("value")]))
            value = max(per_run) if goal.get("worst_run") and per_run else None
            value = _get(view, goal["value"]) if "value" in goal else value
            target_text = goal.get("target_text", f"{'≥' if at_least else '≤'} {target:g}")
            measured = "—" if value is None else _fill(goal["measured"], {**view, "value": value})
        verdict, margin = _verdict(value, target, at_least=at_least)
        if verdict == "MISS":
            verdict = goal.get("missed", "MISS")
            measured = goal.get("measured_missed", measured)
        rows.append(
            {
                "key": goal["key"],
                "goal": _fill(goal["goal"], view),
                "target": target_text,
                "measured": measured,
                "value": value,
                "runs": [round(v, 3) for v in per_run],
                "range": _range(per_run, fmt),
                "verdict": verdict,
                "margin": margin,
                "explain": goal.get("explain", "endpoint" if "endpoint" in goal else None),
                "endpoint": goal.get("endpoint"),
            }
        )
    return rows


def _product_rss(results: dict) -> list[dict]:
    """Peak RSS entries of this commit's processes (the baseline commit's server is not the product)."""
    return [e for e in results.get("peak_rss_mb") or [] if not e["name"].startswith("baseline")]


def noise_cores(results: dict) -> float:
    """Mean CPU (cores) used by processes outside the benchmark during the per-run scenarios."""
    s = results.get("summary") or {}
    values = [s[n]["cpu_cores"].get("other", 0.0) for n in SCENARIOS if "cpu_cores" in s.get(n, {})]
    return sum(values) / len(values) if values else 0.0


def _code(results: dict) -> str:
    code = results.get("code") or {}
    dirty = code.get("uncommitted_product_files") or []
    return f"`{code.get('commit', '?')}`" + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def table_row(*cells) -> str:
    """One markdown table row; a missing figure (None) shows as —."""
    return "| " + " | ".join("—" if c is None else str(c) for c in cells) + " |"


def _lat_rows(prefix: str, by_outcome: dict | None) -> list[str]:
    keys = ("count", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    return [
        table_row(prefix.format(o), *(stats.get(k, "—") for k in keys))
        for o, stats in (by_outcome or {}).items()
    ]


def steady_table(title: str, data: dict, after: str = "") -> list[str]:
    text = f"""{title}

**{{rps}} req/s** over {{seconds}} s (first second left out), {{errors|0}} errors.

{LAT_HEAD}"""
    rows = _lat_rows("all", {"": data}) + _lat_rows("`{}`", data.get("by_outcome"))
    return [_fill(text, data), *rows, "", *([_fill(after, data), ""] if after else [])]


HEAD = """Command: `{command}` — commit {code_text}, {started}, {wall_seconds} s wall, {runs_text}. \
Machine: {machine.cpus} cores shared by the load generator, the API server (granian, \
`python -m core.serve`), Celery, PostgreSQL and Redis (all on 127.0.0.1). Concurrency \
{args.concurrency} closed-loop clients, {args.buyers} buyers."""
HEAD_BASELINE = """ Baseline: commit `{baseline.commit}` served by {baseline.server|its own server}, \
measured right after each current measurement on the same database and Redis."""
REFERENCES = """**References** (same server configuration as the product, 2 workers): bare WSGI \
app **{summary.bare.rps} req/s** (runs {bare_range}; the load generator used \
{summary.bare.cpu_cores.loadgen} cores: it, not the server, bounds this figure on \
{machine.cpus} cores), `GET /health/` **{summary.health.rps} req/s** (runs {health_range}).

"""


def _head(results: dict) -> list[str]:
    s, runs = results.get("summary") or {}, len(results.get("runs") or [])
    lines = ["# Flash-sale benchmark: the hot path, the baseline commit and a naive design", ""]
    if results.get("failure"):
        lines += ["> **THE RUN FAILED** — " + results["failure"].splitlines()[0], ""]
    if (noise := noise_cores(results)) > NOISE_CORES:
        lines += [
            f"> **Noisy machine:** other work used {noise:.2f} cores on average during the "
            "scenarios (column `other` below), so absolute figures are low; compare the ratios, "
            "or re-run when the machine is quiet.",
            "",
        ]
    view = {
        **results,
        "code_text": _code(results),
        "runs_text": f"{runs} run(s){' (medians)' if runs > 1 else ''}",
        "bare_range": _range(_per_run(results, ["bare.rps"]), "{:.0f}"),
        "health_range": _range(_per_run(results, ["health.rps"]), "{:.0f}"),
    }
    text = HEAD + (HEAD_BASELINE if results.get("baseline") else "") + "\n\n"
    text += REFERENCES if s.get("bare") or s.get("health") else ""
    return lines + _fill(text, view).split("\n")[:-1]


ACCEPT_COMMIT = """Workers committed these at {commit.orders_per_s} orders/s while the load ran, \
in {commit.batches} batches ({commit.orders_per_batch} orders per batch) (accept → final p50 \
{commit.accept_to_final_p50_ms} ms, p99 {commit.accept_to_final_p99_ms} ms)."""
POLLED = """{orders} orders, one per buyer, each read by its owner; \
{orders_still_in_status_after} of them still in that status after the scenario (no drain is \
queued for the pending ones)."""


STEADY = [  # (scenario, title, the paragraph under its table)
    ("floor", "## a. Authenticated `GET /events/<id>/`", ""),
    ("accept", "## a′. Accept path: purchases that are all accepted (no polling)", ACCEPT_COMMIT),
    ("poll_pending", "## p. `GET /orders/<id>/` by its owner, order pending", POLLED),
    ("poll_final", "## p′. `GET /orders/<id>/` by its owner, order confirmed", POLLED),
]
GOALS_HEAD = """## Goals

| Goal | Target | Measured (median) | Runs range | Result |
|---|---|---|---|---|"""
CHARTS = """## Charts

![Requests/s and tickets over time](sale_timeline.png)

![Latency percentiles per outcome](latency_percentiles.png)

![Commit throughput from a backlog](scale_out.png)

## Method
"""


def markdown(results: dict, spec: dict | None = None) -> str:
    s, rows = results.get("summary") or {}, goals(results, spec)
    lines = _head(results) + goals_table(rows)
    lines += [""] + _limits_section(results, [r for r in rows if r["verdict"] == "MISS"])
    lines += _cpu_section(results) + _stage_section(results)
    for key, title, after in STEADY:
        lines += steady_table(title, s[key], after) if s.get(key) else []
    if sale := s.get("sale"):
        lines += _fill(SALE, s).split("\n") + _lat_rows(
            "purchase `{}`", sale.get("purchases_by_outcome")
        )
        lines += _lat_rows("poll → `{}`", sale.get("polls_by_outcome")) + [""]
    lines += steady_table("## c. Sold-out flood", s["flood"]) if s.get("flood") else []
    if s.get("sale") and (naive := s.get("naive")):
        lines += _fill(NAIVE, s).split("\n") + _lat_rows(
            "naive `{}`", naive.get("purchases_by_outcome")
        )
        lines += [""]
    lines += _fill(CROWD, s).split("\n") if s.get("crowd") else []
    lines += _baseline_section(s) + _scale_section(results.get("scale_out") or {})
    lines += _resources_section(results) + CHARTS.split("\n") + [METHOD]
    return "\n".join(lines) + "\n"


def goals_table(rows: list[dict]) -> list[str]:
    """The Goals section: one row per goal (rows from `goals`)."""
    return GOALS_HEAD.split("\n") + [
        table_row(
            r["goal"], r["target"], r["measured"], r["range"], f"**{r['verdict']}** {r['margin']}"
        )
        for r in rows
    ]


def _cpu_section(results: dict) -> list[str]:
    """req/s and API CPU per request for each endpoint, here and at the baseline commit."""
    s = results.get("summary") or {}
    if not s:
        return []
    profiles, base = results.get("stage_profiles") or {}, s.get("baseline") or {}
    lines = [
        "## CPU per request, by endpoint",
        "",
        "API CPU ms per request = CPU seconds of the API server's processes during the scenario / "
        "requests it served (psutil; only the server under load works meanwhile). In-process µs: "
        "`python -m loadtests.inprocess` through the WSGI handler without a server (see stage "
        "profiles).",
        "",
        "| Endpoint | req/s | API CPU ms/request | in-process CPU µs/request | baseline req/s | "
        "baseline API CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key, rps_key, profile in ENDPOINTS:
        if not (data := _get(s, key)):
            continue
        old = (base.get(key) if key in BASELINE_SCENARIOS else None) or {}
        cells = [_get(data, rps_key), data.get("api_cpu_ms_per_request")]
        cells += [_get(profiles, f"{profile}.cpu_us_per_request") if profile else None]
        cells += [old.get("rps"), old.get("api_cpu_ms_per_request")]
        lines.append(table_row(label, *cells))
    return lines + [""]


def _stage_section(results: dict) -> list[str]:
    profiles = results.get("stage_profiles") or {}
    if not profiles:
        return []
    found = {stage for p in profiles.values() for stage in (p.get("stages") or {})}
    columns = [st for st in STAGES if st in found] + sorted(found - set(STAGES))
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
        if not (stages := profile.get("stages") or {}):
            error = profile.get("error", "no profile")
            lines.append(f"| {endpoint} | — | {error} |" + " |" * (len(columns) - 1))
            continue
        cells = [f"{stages[c]:.1f}%" if c in stages else "—" for c in columns]
        cpu = profile.get("cpu_us_per_request") or "—"
        lines.append(table_row(endpoint, cpu, *cells))
    return lines + [""]


def _baseline_section(s: dict) -> list[str]:
    base = s.get("baseline") or {}
    if not [k for k in base if isinstance(base.get(k), dict)]:
        return []
    lines = [
        f"## g. Side by side with commit `{base.get('commit')}` (same run, same data)",
        "",
        "Each baseline measurement ran right after the current one; its accepted orders were "
        "drained by the current worker (same task name and queue) and the same invariants were "
        "checked.",
        "",
        "| Endpoint | current req/s | baseline req/s | × | current p99 ms | baseline p99 ms "
        "| baseline errors |",
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
        ratio = f"{cur['rps'] / old['rps']:.2f}" if cur.get("rps") and old.get("rps") else None
        cells = (cur.get("rps"), old.get("rps"), ratio, cur.get("p99_ms"), old.get("p99_ms"))
        lines.append(table_row(label, *cells, old.get("errors")))
    return lines + [""]


SALE = (
    """## b. Flash sale (queued design)

{sale.tickets|0:,} tickets, 1–4 per request; clients start 1 s before the opening and keep \
buying until they see `sold_out` (+1 s), then poll their orders honouring `Retry-After`.

| | |
|---|---:|
| Sold out after opening | {sale.sold_out_after_open_s} s |
| Every order final after opening (PostgreSQL) | {sale.all_final_after_open_s} s |
| Last client saw its order final | {sale.client_saw_all_final_after_open_s} s |
| Purchase req/s, opening → sold out | {sale.purchase_rps_in_sale_window} |
| All req/s incl. polls, opening → sold out | {sale.all_rps_in_sale_window} |
| Orders accepted | {sale.orders_won|0:,} |
| Worker commits during the sale | {sale.commit.orders_per_s} orders/s \
(peak {sale.commit.peak_orders_in_1s} in 1 s) |
| Commit batches (orders per batch) | {sale.commit.batches} ({sale.commit.orders_per_batch}) |
| Accept → final | p50 {sale.commit.accept_to_final_p50_ms} ms, \
p99 {sale.commit.accept_to_final_p99_ms} ms |
| Polls per accepted order | {sale.line.polls_per_accepted_order} |
| Final in PostgreSQL → buyer saw it | p50 {sale.line.final_to_seen_p50_s} s, \
p90 {sale.line.final_to_seen_p90_s} s |
| Estimated wait at accept vs actual accept → final, absolute error | median \
{sale.line.estimate_abs_error_median_s} s, p90 {sale.line.estimate_abs_error_p90_s} s \
({sale.line.estimates_null} accepts said null) |
| Errors | {sale.errors|0} |

"""
    + LAT_HEAD
)
NAIVE = (
    """## d. Queued vs naive, same sale, same concurrency

The naive design commits the purchase inside the request under `select_for_update` \
(loadtests/naive, a second API server with the same configuration). Its clients need no \
polling; the queued clients' polls are extra load on the same 2 cores. After its sale, the \
naive API gets the same sold-out flood as the queued one.

| | queued | naive |
|---|---:|---:|
| Purchase req/s, opening → sold out | {sale.purchase_rps_in_sale_window} | \
{naive.purchase_rps_in_sale_window} |
| Purchase p50 ms in that window | {sale.purchase_latency_in_sale_window.p50_ms} | \
{naive.purchase_latency_in_sale_window.p50_ms} |
| Purchase p99 ms in that window | {sale.purchase_latency_in_sale_window.p99_ms} | \
{naive.purchase_latency_in_sale_window.p99_ms} |
| Sold out after opening, s | {sale.sold_out_after_open_s} | {naive.sold_out_after_open_s} |
| Every order final after opening, s | {sale.all_final_after_open_s} | \
{naive.all_final_after_open_s} |
| Orders won | {sale.orders_won} | {naive.orders_won} |
| Sold-out flood req/s | {flood.rps} | {naive.flood.rps} |
| Sold-out flood p99 ms | {flood.p99_ms} | {naive.flood.p99_ms} |

"""
    + LAT_HEAD
)
CROWD = """## f. Flash crowd: {crowd.connections|0:,} keep-alive connections on a sale

{crowd.tickets|0:,} tickets; every client holds one connection, buys from 1 s before the \
opening until it sees `sold_out` (+1 s) and polls as the Locust buyer does. A request is \
answered when the API sends any HTTP response within 10 s (a 503 with `Retry-After` and a \
`code` included).

| | |
|---|---:|
| Requests | {crowd.requests} |
| Unanswered (socket errors, time-outs) | {crowd.unanswered} |
| Answered later than 10 s | {crowd.answered_late} |
| Busy answers (503 + Retry-After + code) | {crowd.busy_answers} |
| 5xx without a code | {crowd.server_errors} |
| Latency p50 / p90 / p99 / max ms | {crowd.latency.p50_ms} / {crowd.latency.p90_ms} / \
{crowd.latency.p99_ms} / {crowd.latency.max_ms} |
| Sold out / all final after opening | {crowd.sold_out_after_open_s} s / \
{crowd.all_final_after_open_s} s |
| Errors by kind | {crowd.errors|0} |
"""


def _api_ms_per_request(data: dict, rps_key: str) -> float | None:
    """Milliseconds of API CPU per request: API cores busy / requests per second."""
    cores, rps = _get(data, "cpu_cores.api"), _get(data, rps_key)
    return round(cores / rps * 1000, 2) if cores and rps else None


SALE_LIMIT = """- **Sale duration** is bound by the API's request rate: the sale took about \
{requests:,} requests (purchases and one poll per order) at {sale.all_rps_in_sale_window} \
req/s, with the API processes busy {sale.cpu_cores.api} cores ({sale_ms} ms of API CPU per \
request; the floor GET costs {floor_ms} ms) and the load generator \
{sale.cpu_cores.loadgen}, on {cpus} cores. The commit side was not the limit: workers busy \
{sale.cpu_cores.worker} cores, accept → final p50 {sale.commit.accept_to_final_p50_ms} ms, \
last order final {tail} s after the last ticket was sold."""
NAIVE_LIMIT = """- **Queued vs naive**: the naive design was not held up by its row lock (waiters \
in {waits}% of samples, at most {naive.pg_lock_waits.max_waiting_backends} waiting backend) \
but by API CPU, like the queued design: {naive_ms} ms of API CPU per naive purchase against \
{queued_ms} ms per queued purchase including its poll. With as many API processes as cores, \
at most that many naive transactions queue on the event row; the queued design's advantage, \
refusing without SQL, shows in the sold-out path, not in the accepted one."""


def _limits_section(results: dict, missed: list[dict]) -> list[str]:
    """For each missed goal, what the same run says limits it (its `explain`)."""
    s = results.get("summary") or {}
    if not s or not missed:
        return []
    sale, naive, kinds = s.get("sale") or {}, s.get("naive") or {}, {r["explain"] for r in missed}
    g = lambda d, p: _get(d, p) or 0  # noqa: E731
    view = {
        **s,
        "requests": round(g(sale, "all_rps_in_sale_window") * g(sale, "sale_window_s")),
        "sale_ms": _api_ms_per_request(sale, "all_rps_in_sale_window"),
        "floor_ms": _api_ms_per_request(s.get("floor") or {}, "rps"),
        "cpus": results["machine"]["cpus"],
        "tail": round(g(sale, "all_final_after_open_s") - g(sale, "sold_out_after_open_s"), 3),
        "waits": round(g(naive, "pg_lock_waits.share_of_samples_with_waiters") * 100),
        "naive_ms": _api_ms_per_request(naive, "purchase_rps_in_sale_window"),
        "queued_ms": _api_ms_per_request(sale, "purchase_rps_in_sale_window"),
    }
    lines = ["### What limits the missed goals", ""]
    lines += [_fill(SALE_LIMIT, view)] if "sale" in kinds else []
    lines += [_fill(NAIVE_LIMIT, view)] if "naive" in kinds else []
    lines += _endpoint_limits(results, [row for row in missed if row["explain"] == "endpoint"])
    if len(lines) == 2:
        return []
    return lines + [
        "",
        "Profiles (`--profile`, py-spy) and what-ifs: [bottlenecks.md](bottlenecks.md), "
        "[profiles.md](profiles.md).",
        "",
    ]


def _endpoint_limits(results: dict, missed: list[dict]) -> list[str]:
    """One line per endpoint with a missed goal: its CPU against /health/'s, its top stages."""
    s, profiles = results.get("summary") or {}, results.get("stage_profiles") or {}
    by_endpoint: dict[tuple, list[str]] = {}
    for row in missed:
        by_endpoint.setdefault(tuple(row["endpoint"]), []).append(row["key"])
    lines = []
    for (label, key, profile), keys in by_endpoint.items():
        ms, base_ms = (_get(s, f"{k}.api_cpu_ms_per_request") for k in (key, f"baseline.{key}"))
        stages = sorted((_get(profiles, f"{profile}.stages") or {}).items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{stage} {share:.0f}%" for stage, share in stages[:3]) or "no profile"
        lines.append(
            f"- **{label.capitalize()}** ({', '.join(keys)}): {ms} ms of API CPU per request "
            f"against {_get(s, 'health.api_cpu_ms_per_request')} ms for `/health/`"
            + (f" and {base_ms} ms at the baseline commit" if base_ms else "")
            + f"; in-process, the largest stages are {top}."
        )
    return lines


SCALE = """## e. Scale-out: draining a backlog of pending orders

Pending orders inserted with one SQL statement (gate rebuilt from PostgreSQL), then a worker \
with N prefork processes started and the drain task(s) published; timed from publication to \
the last `finalized_at`.

Broker and Redis: the run's own (Redis as broker, one Redis) unless `--scale-out-engines` \
added series (RabbitMQ quorum queues; a three-node Redis Cluster, the events' gates on the \
nodes counted in the last column).

| Shape | Broker | Redis | Processes | Orders | Seconds | Orders/s | CPU cores: worker / \
postgres | Redis nodes |
|---|---|---|---:|---:|---:|---:|---|---:|"""


def _scale_section(scale: dict) -> list[str]:
    if not scale:
        return []
    lines = SCALE.split("\n")
    for row in scale.values():
        cpu = row["cpu_cores"]
        lines.append(
            f"| {row['shape']} | {row.get('broker', 'redis')} | {row.get('topology', 'single')} "
            f"| {row['processes']} | {row['orders']:,} | {row['seconds']} | "
            f"{row['orders_per_s']:,.0f} | {cpu.get('worker', 0)} / {cpu.get('postgres', 0)} "
            f"| {row.get('redis_nodes', 1)} |"
        )
    return lines + [""]


RESOURCES = """## CPU (cores busy on average) and PostgreSQL lock waits per scenario

`other` is CPU used on the machine by none of the listed roles (noise from other work).

| Scenario | api | worker | postgres | redis | loadgen | other | lock-wait samples | max \
waiting backends |
|---|---:|---:|---:|---:|---:|---:|---:|---:|"""


def _resources_section(results: dict) -> list[str]:
    lines = [
        "## Processes: peak RSS (sampled every 0.2 s)",
        "",
        "| Process | Role | pid | Peak RSS MB |",
        "|---|---|---:|---:|",
    ]  # the baseline commit's processes included (they are not in the goal)
    lines += [
        table_row(e["name"], e["role"], e.get("pid", ""), e["rss_mb"])
        for e in results.get("peak_rss_mb") or []
    ]
    if not (s := results.get("summary") or {}):
        return lines + [""]
    lines += ["", *RESOURCES.split("\n")]
    names = [name for name in SCENARIOS if s.get(name)]
    names += ["naive.flood"] if _get(s, "naive.flood") else []
    names += [f"baseline.{n}" for n in BASELINE_SCENARIOS if _get(s, f"baseline.{n}")]
    for name in names:
        cpu, locks = _get(s, name).get("cpu_cores", {}), _get(s, name).get("pg_lock_waits", {})
        cells = [cpu.get(r, 0) for r in ("api", "worker", "postgres", "redis", "loadgen", "other")]
        cells += [f"{locks.get('share_of_samples_with_waiters', 0) * 100:.0f}%"]
        cells += [locks.get("max_waiting_backends", 0)]
        lines.append(table_row(name, *cells))
    lines += ["", "Most frequent lock waits (wait event: query), by samples:", ""]
    for name in ("accept", "sale", "naive"):
        top = (s.get(name) or {}).get("pg_lock_waits", {}).get("top_waits") or {}
        lines += [f"- {name}: `{query}` × {count}" for query, count in top.items()]
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


def console_summary(results: dict, spec: dict | None = None) -> str:
    lines = ["", "Goals:"]
    if noise_cores(results) > NOISE_CORES:
        lines.insert(
            1, f"(noisy machine: other work used {noise_cores(results):.2f} cores on average)"
        )
    for row in goals(results, spec):
        lines.append(
            f"  {row['verdict']:<5} {row['margin']:<9} {row['goal']}: {row['measured']} "
            f"(target {row['target']})"
        )
    return "\n".join(lines)


def write(results: dict, last_run: dict | None, out: Path, goals_path: Path = GOALS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    spec = goals_load(goals_path)
    results = {**results, "goals": goals(results, spec)}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(markdown(results, spec))
    if last_run:
        from loadtests import charts

        drain = next((g["target"] for g in spec["goal"] if g["key"] == "backlog_commit"), None)
        charts.write_all(last_run, results.get("scale_out") or {}, out, drain)
