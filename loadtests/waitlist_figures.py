"""The figures of `python -m loadtests.waitlist_bench`: the offers the stated rule makes,
computed apart from the product, what reached the waitlisted buyers and what the flood took,
and waitlist.json / waitlist.md with the [[waitlist_goal]] rows of loadtests/goals.toml."""

from __future__ import annotations

import json
from itertools import zip_longest
from pathlib import Path

from loadtests import report

TITLE = "The waitlist after a sell-out, under a sold-out flood"
PER_CORE = (
    "Medians over the pairs: requests/s {flood_rps_vs_plain}×; flood requests per API "
    "CPU-second {flood_per_api_core_vs_plain}× (with the waitlist vs without, each pair "
    "on the same host; `other` is the host's work outside the benchmark, in cores)."
)
WAITLISTED_CPU = (
    " (the waitlisted buyers' requests, served meanwhile, included; their load generator's"
    " CPU is in `other`)"
)


def offers_expected(quantities: list[int], returns: list[int]) -> tuple[list[list[int]], int]:
    """The offers the stated rule makes, computed apart from the product: each return in
    turn, with what earlier ones left, goes to the waiting entries in join order whose
    quantity still fits. Return the entries (join indexes) offered per return and the
    tickets left over."""
    waiting, rounds, pool = list(range(len(quantities))), [], 0
    for size in returns:
        pool += size
        offered = []
        for index in waiting:
            if quantities[index] <= pool:
                offered.append(index)
                pool -= quantities[index]
        waiting = [i for i in waiting if i not in offered]
        rounds.append(offered)
    return rounds, pool


def returns_figures(event_id: int, flood_ids: list[int], returned: list[int]) -> dict:
    """The tickets returned (`returned`: each cancelled order's), and what the flood took."""
    from django.db.models import Sum

    from core.models import Order

    took = Order.objects.filter(event_id=event_id, status="confirmed", user_id__in=flood_ids)
    return {
        "returns": len(returned),
        "tickets_returned": sum(returned),
        "flood_took_orders": took.count(),
        "flood_took_tickets": took.aggregate(n=Sum("quantity"))["n"] or 0,
    }


def waitlisted_figures(
    event_id: int, user_ids: list[int], quantities: list[int], returned: list[int], samples
) -> dict:
    """What reached the waitlisted buyers (`user_ids` in join order, asking `quantities`),
    and whether in the stated order; `samples`: their own requests."""
    from core.models import Order, WaitlistEntry

    place = {user: i for i, user in enumerate(user_ids)}
    entries = WaitlistEntry.objects.filter(event_id=event_id).exclude(offered_at=None)
    rounds: dict[float, list[int]] = {}
    for user, at in entries.values_list("user_id", "offered_at"):
        rounds.setdefault(at.timestamp(), []).append(place[user])
    actual = [sorted(r) for _, r in sorted(rounds.items())]
    expected, left = offers_expected(quantities, returned)
    expected = [r for r in expected if r]
    differ = [i for i, (a, b) in enumerate(zip_longest(expected, actual)) if a != b]
    bought = Order.objects.filter(
        event_id=event_id, status="confirmed", waitlist_entry__isnull=False
    )
    reached = sum(bought.values_list("quantity", flat=True))
    taken = [o.created_at.timestamp() - o.waitlist_entry.offered_at.timestamp()
             for o in bought.select_related("waitlist_entry")]  # fmt: skip
    kinds = {k: int(samples.mask(kind=k).sum()) for k in ("entry", "buy", "poll")}
    seconds = float(samples.end.max() - samples.t.min()) if len(samples.t) else 0.0
    return {
        "offers": len(entries), "offer_rounds": len(actual), "rounds_expected": len(expected),
        "tickets_offered": sum(e.offered_quantity for e in entries),
        "tickets_reached": reached, "tickets_not_reached": sum(returned) - reached,
        "offers_out_of_order": len(differ), "first_round_out_of_order": differ[0] if differ else None,
        "tickets_left_expected": left, "offers_expired": entries.filter(status="expired").count(),
        "offer_to_order_p50_s": round(sorted(taken)[len(taken) // 2], 2) if taken else None,
        "offer_to_order_max_s": round(max(taken), 2) if taken else None,
        "requests": kinds, "requests_per_s": round(sum(kinds.values()) / max(seconds, 1e-3), 1),
    }  # fmt: skip


def pair_ratios(waitlist: dict, plain: dict) -> dict:
    """The two floods of a pair compared: requests/s (the goal's), and requests per API
    CPU-second, which does not depend on how much CPU the host's other work left the API
    (the waitlisted buyers' own requests are in the waitlist arm's CPU)."""
    cpu = plain["api_cpu_ms_per_request"], waitlist["api_cpu_ms_per_request"]
    return {
        "flood_rps_vs_plain": round(waitlist["rps"] / plain["rps"], 3),
        "flood_per_api_core_vs_plain": round(cpu[0] / cpu[1], 3) if all(cpu) else None,
    }


def write(results: dict, out: Path, goals_path: Path = report.GOALS) -> dict:
    """Medians, goals, waitlist.json and waitlist.md in `out`; return the results."""
    from loadtests.bench import _public, summarize

    complete = [run for run in results["runs"] if run.get("_complete")]
    results["runs"] = [_public(run) for run in results["runs"]]
    results["summary"] = summarize(complete) if complete else {}
    spec = {"goal": report.goals_load(goals_path).get("waitlist_goal", [])}
    results["goals"] = report.goals(results, spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "waitlist.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "waitlist.md").write_text(markdown(results))
    print(report.console_summary(results, spec), flush=True)
    return results


def markdown(results: dict) -> str:
    """The goals, each pair, then the median flood of each arm."""
    s, code = results["summary"], results["code"]
    lines = [f"# {TITLE}", ""]
    lines += [
        f"`{results['command']}` at commit `{code['commit']}`, {results['started']}, "
        f"{results.get('wall_seconds')} s wall; {results['cpus']} cores; host load: "
        f"{results.get('busy_cores_before_start')} cores busy before the start, load average "
        f"{results['load_average_before']} before and {results.get('load_average_after')} after.",
        "",
    ]
    if failure := results.get("failure"):
        lines += [f"**{failure.splitlines()[0]}**", "", "```", failure, "```", ""]
    lines += report.goals_table(results["goals"]) + ["", "## Pairs", ""]
    head = ["pair", "order", "flood req/s waitlist / plain", "ratio", "other cores",
            "API ms per flood request", "per API core-second ratio", "tickets returned",
            "reached waitlisted", "offers", "rounds out of order", "flood took (waitlist / plain)",
            "cancellations that waited (max ms)", "offer → order p50 s"]  # fmt: skip
    lines += [report.table_row(*head), "|---|---|" + "---:|" * (len(head) - 2)]
    for i, run in enumerate(r for r in results["runs"] if r.get("flood_rps_vs_plain")):
        w, p, wl = run["waitlist"], run["plain"], run["waitlist"]["waitlisted"]
        wf, pf = w["flood"], p["flood"]
        lines.append(report.table_row(
            i + 1, run["order"], f"{wf['rps']} / {pf['rps']}", run["flood_rps_vs_plain"],
            f"{wf['cpu_cores'].get('other')} / {pf['cpu_cores'].get('other')}",
            f"{wf['api_cpu_ms_per_request']} / {pf['api_cpu_ms_per_request']}",
            run["flood_per_api_core_vs_plain"], w["tickets_returned"], wl["tickets_reached"],
            wl["offers"], wl["offers_out_of_order"],
            f"{w['flood_took_tickets']} / {p['flood_took_tickets']}",
            f"{w['cancellations']['waited']} ({w['cancellations']['max_wait_ms']})",
            wl["offer_to_order_p50_s"],
        ))  # fmt: skip
    lines += ["", PER_CORE.format(**s)] if s.get("flood_per_api_core_vs_plain") else []
    for arm, title in (("waitlist", "with the waitlist"), ("plain", "without a waitlist")):
        if flood := (s.get(arm) or {}).get("flood"):
            lines += [""] + report.steady_table(f"## The flood {title} (medians)", flood)
            cores = ", ".join(f"{k} {v}" for k, v in flood["cpu_cores"].items() if k != "machine")
            lines += [f"Cores: {cores}. API CPU {flood['api_cpu_ms_per_request']} ms per flood "
                      f"request{WAITLISTED_CPU if arm == 'waitlist' else ''}.", ""]  # fmt: skip
    if wl := (s.get("waitlist") or {}).get("waitlisted"):
        lines += ["## The waitlisted buyers (medians)", "", "```", json.dumps(wl, indent=1), "```"]
    return "\n".join(lines) + "\n"
