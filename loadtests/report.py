"""results.json, report.md and the PNG charts of `python -m loadtests.bench`."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

RSS_LIMIT_MB = 150
NOISE_CORES = 0.25  # above this mean `other` CPU the report warns that the machine was busy
COMMIT_GOAL = 2000
FINAL_GOAL_S = 15


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
    else:
        ok, margin = measured <= target, (target / measured - 1) if measured else float("inf")
    return ("PASS" if ok else "MISS"), f"by {abs(margin) * 100:.0f}%"


def _ratio(results: dict, numerator: str, denominator: str, unit: str) -> tuple[float | None, str]:
    """numerator / denominator measured within each run, then the median over runs.

    Ratios of one run share its machine state, so on a noisy machine the median of the
    per-run ratios is steadier than a ratio of medians taken from different runs.
    """
    pairs = [(_get(run, numerator), _get(run, denominator)) for run in results.get("runs") or []]
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        s = results.get("summary") or {}
        a, b = _get(s, numerator), _get(s, denominator)
        pairs = [(a, b)] if a and b else []
    if not pairs:
        return None, "—"
    ratios = sorted(a / b for a, b in pairs)
    median = statistics.median(ratios)
    if len(pairs) == 1:
        a, b = pairs[0]
        return median, f"{a} / {b} {unit} = {median:.2f}×"
    s = results.get("summary") or {}
    return median, (f"{median:.2f}× (median of runs: {', '.join(f'{r:.2f}' for r in ratios)}; "
                    f"medians {_get(s, numerator)} / {_get(s, denominator)} {unit})")


def goals(results: dict) -> list[dict]:
    s, scale = results.get("summary") or {}, results.get("scale_out") or {}
    rows = []

    def add(key, goal, target_text, measured, measured_text, target, at_least):
        verdict, margin = _verdict(measured, target, at_least=at_least)
        rows.append({"key": key, "goal": goal, "target": target_text, "measured": measured_text,
                     "value": measured, "verdict": verdict, "margin": margin})

    add("sold_out_vs_floor", "Sold-out path vs floor (req/s)", "≥ 1.0×", *_ratio(results, "flood.rps", "floor.rps", "req/s"), 1.0, True)
    add("accept_vs_floor", "Accept path vs floor (req/s)", "≥ 0.5×", *_ratio(results, "accept.rps", "floor.rps", "req/s"), 0.5, True)
    drain = _get(scale, "one_event/x2.orders_per_s")
    best = max((v["orders_per_s"] for v in scale.values()), default=None)
    add("backlog_commit", "Workers commit from a backlog (one hot event, 2 processes)", f"≥ {COMMIT_GOAL:,} orders/s", drain,
        f"{drain:,.0f} orders/s (best shape/processes: {best:,.0f})" if drain else "—", COMMIT_GOAL, True)
    final = _get(s, "sale.all_final_after_open_s")
    sold = _get(s, "sale.sold_out_after_open_s")
    add("sale_final", f"{_get(s, 'sale.tickets', 0):,} tickets sold out and every order final", f"≤ {FINAL_GOAL_S} s after opening",
        final, f"sold out {sold} s, all final {final} s" if final else "—", FINAL_GOAL_S, False)
    add("naive_rps", "Queued vs naive: purchase req/s during the sale", "≥ 3×",
        *_ratio(results, "sale.purchase_rps_in_sale_window", "naive.purchase_rps_in_sale_window", "req/s"),
        3.0, True)
    add("naive_p99", "Queued vs naive: purchase p99 during the sale", "≤ 1/3 (0.33×)",
        *_ratio(results, "sale.purchase_latency_in_sale_window.p99_ms",
                "naive.purchase_latency_in_sale_window.p99_ms", "ms"), 1 / 3, False)
    broken, checked = results.get("invariant_broken"), bool(s)
    rows.append({"key": "invariants", "goal": "Zero oversold / lost / pending; gate == total - sold", "target": "0 broken",
                 "measured": "BROKEN (see top)" if broken else "all invariants held" if checked else "—",
                 "value": int(bool(broken)), "margin": "",
                 "verdict": "FAIL" if broken else "PASS" if checked else "n/a"})
    peak = max(results.get("peak_rss_mb") or [], key=lambda e: e["rss_mb"], default=None)
    add("peak_rss", "Peak RSS of each gunicorn / Celery process", f"< {RSS_LIMIT_MB} MB", peak and peak["rss_mb"],
        f"max {peak['rss_mb']} MB ({peak['name']}, {peak['role']})" if peak else "—", RSS_LIMIT_MB, False)
    return rows


def noise_cores(results: dict) -> float:
    """Mean CPU (cores) used by processes outside the benchmark during scenarios a-d."""
    s = results.get("summary") or {}
    values = [s[name]["cpu_cores"].get("other", 0.0) for name in ("floor", "accept", "sale", "flood", "naive")
              if name in s and "cpu_cores" in s[name]]
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
    lines = [title, "", f"**{data.get('rps')} req/s** over {data.get('seconds')} s (first second left out), "
             f"{data.get('errors', 0)} errors.", "", LAT_HEAD, _lat_row("all", data)]
    for outcome, stats in (data.get("by_outcome") or {}).items():
        lines.append(_lat_row(f"`{outcome}`", stats))
    return lines + [""]


def markdown(results: dict) -> str:
    s = results.get("summary") or {}
    runs = len(results.get("runs") or [])
    lines = ["# Flash-sale benchmark: queued purchases vs. a naive design", ""]
    if results.get("failure"):
        lines += ["> **THE RUN FAILED** — " + results["failure"].splitlines()[0], ""]
    noise = noise_cores(results)
    if noise > NOISE_CORES:
        lines += [f"> **Noisy machine:** other work used {noise:.2f} cores on average during the scenarios "
                  "(column `other` below), so absolute figures are low; compare the ratios, or re-run "
                  "when the machine is quiet.", ""]
    lines += [
        f"Command: `{results['command']}` — commit {_code(results)}, {results['started']}, "
        f"{results['wall_seconds']} s wall, "
        f"{runs} run(s){' (medians)' if runs > 1 else ''}. Machine: {results['machine']['cpus']} cores shared by "
        "the load generator, gunicorn, Celery, PostgreSQL 15 and Redis (all on 127.0.0.1). "
        f"Concurrency {results['args']['concurrency']} closed-loop clients, {results['args']['buyers']} buyers.",
        "", "## Goals", "", "| Goal | Target | Measured | Result |", "|---|---|---|---|",
    ]
    rows = goals(results)
    for row in rows:
        lines.append(f"| {row['goal']} | {row['target']} | {row['measured']} | **{row['verdict']}** {row['margin']} |")
    lines += [""]
    lines += _limits_section(results, {row["key"] for row in rows if row["verdict"] == "MISS"})
    if s:
        lines += _steady_table("## a. Floor: authenticated `GET /events/<id>/`", s["floor"])
        lines += _steady_table("## a′. Accept path: purchases that are all accepted (no polling)", s["accept"])
        lines += [f"Workers committed these at {_get(s, 'accept.commit.orders_per_s')} orders/s while the load ran, "
                  f"in {_get(s, 'accept.commit.batches')} batches ({_get(s, 'accept.commit.orders_per_batch')} "
                  "orders per batch) "
                  f"(accept → final p50 {_get(s, 'accept.commit.accept_to_final_p50_ms')} ms, "
                  f"p99 {_get(s, 'accept.commit.accept_to_final_p99_ms')} ms).", ""]
        lines += _sale_section(s)
        lines += _steady_table("## c. Sold-out flood", s["flood"])
        lines += _naive_section(s)
    lines += _scale_section(results.get("scale_out") or {})
    lines += _resources_section(results)
    lines += ["## Charts", "", "![Requests/s and tickets over time](sale_timeline.png)", "",
              "![Latency percentiles per outcome](latency_percentiles.png)", "",
              "![Commit throughput from a backlog](scale_out.png)", "", "## Method", "", METHOD]
    return "\n".join(lines) + "\n"


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
        total = round((_get(sale, "all_rps_in_sale_window") or 0) * (_get(sale, "sale_window_s") or 0))
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
            "after the last ticket was sold.")
    if missed & {"naive_rps", "naive_p99"}:
        waits = _get(naive, "pg_lock_waits.share_of_samples_with_waiters")
        lines.append(
            f"- **Queued vs naive**: the naive design was not held up by its row lock (waiters in "
            f"{round((waits or 0) * 100)}% of samples, at most {_get(naive, 'pg_lock_waits.max_waiting_backends')} "
            f"waiting backend) but by API CPU, like the queued design: {_api_ms_per_request(naive, 'purchase_rps_in_sale_window')} "
            f"ms of API CPU per naive purchase against {_api_ms_per_request(sale, 'purchase_rps_in_sale_window')} "
            "ms per queued purchase including its poll. With as many API processes as cores, at most that many "
            "naive transactions queue on the event row; the queued design's advantage, refusing without SQL, "
            "shows in the sold-out path, not in the accepted one.")
    lines += ["", "Profiles (`--profile`, py-spy) and what-ifs: [bottlenecks.md](bottlenecks.md), "
              "[profiles.md](profiles.md).", ""]
    return lines


def _sale_section(s: dict) -> list[str]:
    sale = s["sale"]
    lines = ["## b. Flash sale (queued design)", "",
             f"{sale['tickets']:,} tickets, 1–4 per request; clients start {1:.0f} s before the opening and keep "
             "buying until they see `sold_out` (+1 s), then poll their orders honouring `Retry-After`.", "",
             "| | |", "|---|---:|",
             f"| Sold out after opening | {sale['sold_out_after_open_s']} s |",
             f"| Every order final after opening (PostgreSQL) | {sale['all_final_after_open_s']} s |",
             f"| Last client saw its order final | {sale['client_saw_all_final_after_open_s']} s |",
             f"| Purchase req/s, opening → sold out | {sale['purchase_rps_in_sale_window']} |",
             f"| All req/s incl. polls, opening → sold out | {sale['all_rps_in_sale_window']} |",
             f"| Orders accepted | {sale['orders_won']:,} |",
             f"| Worker commits during the sale | {_get(sale, 'commit.orders_per_s')} orders/s "
             f"(peak {_get(sale, 'commit.peak_orders_in_1s')} in 1 s) |",
             f"| Commit batches (orders per batch) | {_get(sale, 'commit.batches')} "
             f"({_get(sale, 'commit.orders_per_batch')}) |",
             f"| Accept → final | p50 {_get(sale, 'commit.accept_to_final_p50_ms')} ms, "
             f"p99 {_get(sale, 'commit.accept_to_final_p99_ms')} ms |",
             f"| Errors | {sale['errors'] or 0} |", "", LAT_HEAD]
    for outcome, stats in sale["purchases_by_outcome"].items():
        lines.append(_lat_row(f"purchase `{outcome}`", stats))
    for outcome, stats in sale["polls_by_outcome"].items():
        lines.append(_lat_row(f"poll → `{outcome}`", stats))
    return lines + [""]


def _naive_section(s: dict) -> list[str]:
    q, n = s["sale"], s["naive"]
    rows = [("Purchase req/s, opening → sold out", "purchase_rps_in_sale_window"),
            ("Purchase p50 ms in that window", "purchase_latency_in_sale_window.p50_ms"),
            ("Purchase p99 ms in that window", "purchase_latency_in_sale_window.p99_ms"),
            ("Sold out after opening, s", "sold_out_after_open_s"),
            ("Every order final after opening, s", "all_final_after_open_s"),
            ("Orders won", "orders_won")]
    lines = ["## d. Queued vs naive, same sale, same concurrency", "",
             "The naive design commits the purchase inside the request under `select_for_update` "
             "(loadtests/naive, a second gunicorn with 2 workers). Its clients need no polling; "
             "the queued clients' polls are extra load on the same 2 cores.", "",
             "| | queued | naive |", "|---|---:|---:|"]
    lines += [f"| {label} | {_get(q, key)} | {_get(n, key)} |" for label, key in rows]
    lines += ["", LAT_HEAD]
    for outcome, stats in n["purchases_by_outcome"].items():
        lines.append(_lat_row(f"naive `{outcome}`", stats))
    return lines + [""]


def _scale_section(scale: dict) -> list[str]:
    if not scale:
        return []
    lines = ["## e. Scale-out: draining a backlog of pending orders", "",
             "Pending orders inserted with one SQL statement (gate rebuilt from PostgreSQL), then a "
             "worker with N prefork processes started and the drain task(s) published; timed from "
             "publication to the last `finalized_at`.", "",
             "| Shape | Processes | Orders | Seconds | Orders/s | CPU cores: worker / postgres |",
             "|---|---:|---:|---:|---:|---|"]
    for row in scale.values():
        cpu = row["cpu_cores"]
        lines.append(f"| {row['shape']} | {row['processes']} | {row['orders']:,} | {row['seconds']} | "
                     f"{row['orders_per_s']:,.0f} | {cpu.get('worker', 0)} / {cpu.get('postgres', 0)} |")
    return lines + [""]


def _resources_section(results: dict) -> list[str]:
    lines = ["## Processes: peak RSS (sampled every 0.2 s)", "", "| Process | Role | pid | Peak RSS MB |",
             "|---|---|---:|---:|"]
    peaks = results.get("peak_rss_mb") or []
    for entry in peaks:
        lines.append(f"| {entry['name']} | {entry['role']} | {entry.get('pid', '')} | {entry['rss_mb']} |")
    s = results.get("summary") or {}
    if s:
        lines += ["", "## CPU (cores busy on average) and PostgreSQL lock waits per scenario", "",
                  "`other` is CPU used on the machine by none of the listed roles (noise from other work).", "",
                  "| Scenario | api | worker | postgres | redis | loadgen | other | lock-wait samples | "
                  "max waiting backends |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name in ("floor", "accept", "sale", "flood", "naive"):
            cpu, locks = s[name].get("cpu_cores", {}), s[name].get("pg_lock_waits", {})
            lines.append(f"| {name} | {cpu.get('api', 0)} | {cpu.get('worker', 0)} | {cpu.get('postgres', 0)} | "
                         f"{cpu.get('redis', 0)} | {cpu.get('loadgen', 0)} | {cpu.get('other', 0)} | "
                         f"{locks.get('share_of_samples_with_waiters', 0) * 100:.0f}% | "
                         f"{locks.get('max_waiting_backends', 0)} |")
        waits = {name: s[name].get("pg_lock_waits", {}).get("top_waits") for name in ("accept", "sale", "naive")}
        lines += ["", "Most frequent lock waits (wait event: query), by samples:", ""]
        for name, top in waits.items():
            for query, count in (top or {}).items():
                lines.append(f"- {name}: `{query}` × {count}")
    return lines + [""]


METHOD = """- Load: `loadtests/loadgen.py`, gevent + geventhttpclient, one process, closed loop (each client
  sends its next request when the previous one answered). gunicorn's sync workers close the
  connection after every response, so every request opens a TCP connection (as with any client).
- Buyers log in once through `POST /login/` before any measurement; tokens are reused. The bench
  stack hashes passwords with MD5 (DJANGO_PASSWORD_HASHERS) so that this preparation does not cost
  minutes of PBKDF2; no measured request checks a password.
- With `--runs N`, every figure is the median over the runs, except the ratio goals: each ratio is
  taken within one run (both sides saw the same machine) and the median of those ratios is reported.
- Steady-state figures (floor, accept, flood) leave out the first second. Sale figures are taken
  between the opening (`sale_starts_at`) and the first `sold_out` answer.
- Invariants after every scenario: `sum(confirmed quantity) == event.tickets_sold == sum(ticket
  quantity)`, one ticket row per confirmed order, no pending order, Redis `remaining == total -
  sold`, every order a client was told about exists, every ticket sold once clients hear sold_out.
- Throttle rates are set to 1,000,000/min, LOG_LEVEL=WARNING, DEBUG off, PROMETHEUS_MULTIPROC_DIR set
  (as `make run`). No beat process runs (no reconciliation during measurements).
- Queued vs naive: with N sync gunicorn workers at most N naive transactions queue on the event
  row, so at the default N = 2 the naive design is bounded by per-request work, not by its lock;
  `--api-workers` raises N. The queued clients also poll (about one extra request per order).
- CPU columns are cores busy on average (psutil, per process tree); `other` is noise from other work
  on the machine. `--profile` adds py-spy wall-clock profiles of the API and worker processes
  (profiles.md).
"""


def console_summary(results: dict) -> str:
    lines = ["", "Goals:"]
    if noise_cores(results) > NOISE_CORES:
        lines.insert(1, f"(noisy machine: other work used {noise_cores(results):.2f} cores on average)")
    for row in goals(results):
        lines.append(f"  {row['verdict']:<5} {row['margin']:<9} {row['goal']}: {row['measured']} "
                     f"(target {row['target']})")
    return "\n".join(lines)


def write(results: dict, last_run: dict | None, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "goals": goals(results)}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "report.md").write_text(markdown(results))
    if last_run:
        from loadtests import charts

        charts.write_all(last_run, results.get("scale_out") or {}, out)
