"""PNG charts of a benchmark run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.analysis import latency_stats  # noqa: E402

COLORS = {"accepted": "tab:green", "confirmed": "tab:green", "sold_out": "tab:red",
          "insufficient_tickets": "tab:orange", "sale_not_open": "tab:gray",
          "pending": "tab:blue", "ok": "tab:blue"}  # fmt: skip


def _rates(ax, chart: dict, title: str) -> None:
    t = np.array(chart["rates"]["t"])
    for key, values in chart["rates"]["series"].items():
        kind, _, outcome = key.partition(" ")
        label = f"poll → {outcome}" if kind == "poll" else outcome
        style = "--" if kind == "poll" else "-"
        ax.plot(t, values, label=label, color=COLORS.get(outcome), linewidth=1.2, linestyle=style)
    locks = chart.get("lock_waits") or {}
    if locks.get("t"):
        twin = ax.twinx()
        label = "PostgreSQL backends waiting on a lock"
        t = np.array(locks["t"]) - chart["open_at"]
        twin.fill_between(t, locks["waiting"], step="mid", color="purple", alpha=0.15, label=label)
        twin.set_ylabel("backends waiting on a lock", fontsize=7, color="purple")
        twin.set_ylim(0, max(4, max(locks["waiting"]) + 1))
        twin.legend(fontsize=7, loc="upper left")
    ax.axvline(0, color="black", linestyle=":", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("responses/s")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)


def sale_timeline(run: dict, path: Path) -> None:
    queued, naive = run["sale"]["_chart"], run["naive"]["_chart"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    _rates(axes[0], queued, "Queued design: responses/s by outcome (0 = the sale opens)")
    title = "Naive design (commit in the request under select_for_update): responses/s by outcome"
    _rates(axes[1], naive, title)
    ax = axes[2]
    for label, series, style, width in (
        ("queued: reserved (202 answered)", queued["reserved"], "tab:olive", 4),
        ("queued: committed (confirmed in PostgreSQL)", queued["committed"], "tab:blue", 1.2),
        ("naive: committed (201 answered)", naive["reserved"], "tab:red", 1.2),
    ):
        if series["t"]:
            alpha = 0.5 if width > 2 else 1
            ax.step(series["t"], series["total"], where="post", label=label, color=style,
                    linewidth=width, alpha=alpha)  # fmt: skip
    ax.axhline(run["sale"]["tickets"], color="black", linestyle="--", linewidth=0.8)
    ax.axvline(0, color="black", linestyle=":", linewidth=1)
    ax.set_title("Tickets over time", fontsize=10)
    ax.set_xlabel("seconds since the sale opened")
    ax.set_ylabel("tickets")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    _save(fig, path)


def latency_percentiles(run: dict, path: Path) -> None:
    groups = []

    def add(label, samples, **mask):
        keep = samples.mask(**mask)
        stats = latency_stats(samples.latency[keep])
        if stats["count"]:
            groups.append((label, stats))

    for key, label in (("bare", "bare app"), ("health", "GET\n/health/")):
        if run.get(key):
            add(label, run[key]["_samples"])
    add("floor GET", run["floor"]["_samples"])
    add("accept-only\naccepted", run["accept"]["_samples"], outcome="accepted")
    for key, label in (("poll_pending", "poll\npending"), ("poll_final", "poll\nfinal")):
        if run.get(key):
            add(label, run[key]["_samples"])
    sale = run["sale"]["_samples"]
    for outcome in ("sale_not_open", "accepted", "insufficient_tickets", "sold_out"):
        add(f"sale\n{outcome}", sale, kind="buy", outcome=outcome)
    add("sale\npoll", sale, kind="poll")
    add("flood\nsold_out", run["flood"]["_samples"], outcome="sold_out")
    naive = run["naive"]["_samples"]
    for outcome in ("sale_not_open", "confirmed", "sold_out"):
        add(f"naive\n{outcome}", naive, kind="buy", outcome=outcome)
    if run["naive"].get("flood"):
        add("naive flood\nsold_out", run["naive"]["flood"]["_samples"], outcome="sold_out")
    if run.get("crowd"):
        add(f"crowd ({run['crowd']['connections']})\nall", run["crowd"]["_samples"])
    fig, ax = plt.subplots(figsize=(max(12, len(groups) * 0.8), 5))
    x = np.arange(len(groups))
    for i, (key, color) in enumerate(
        zip(("p50_ms", "p90_ms", "p99_ms"), ("tab:blue", "tab:orange", "tab:red"), strict=True)
    ):
        values = [g[1][key] for g in groups]
        ax.bar(x + (i - 1) * 0.27, values, 0.27, label=key.replace("_ms", ""), color=color)
    ax.set_xticks(x, [f"{g[0]}\n(n={g[1]['count']})" for g in groups], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (log)")
    title = "Latency percentiles per scenario and outcome (closed-loop clients; the crowd: one per connection)"
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _series(row: dict) -> str:
    """A bar series: the shape, and broker/topology when not the default pair."""
    label = row["shape"].replace("_", " ")
    engines = (row.get("broker", "redis"), row.get("topology", "single"))
    return label if engines == ("redis", "single") else f"{label}, {engines[0]}/{engines[1]}"


def scale_out(scale: dict, path: Path, goal: float | None) -> None:
    series = sorted({_series(row) for row in scale.values()})
    processes = sorted({row["processes"] for row in scale.values()})
    fig, ax = plt.subplots(figsize=(7 + len(series) * 0.4, 4))
    x = np.arange(len(processes))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        rate = {r["processes"]: r["orders_per_s"] for r in scale.values() if _series(r) == name}
        values = [rate.get(p, 0) for p in processes]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    if goal:
        ax.axhline(goal, color="black", linestyle="--", linewidth=1, label=f"goal {goal:,}/s")
    ax.set_xticks(x, [f"{p} process{'es' if p > 1 else ''}" for p in processes])
    ax.set_ylabel("orders committed / s")
    ax.set_title("Draining a backlog of pending orders", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(run: dict, scale: dict, out: Path, drain_goal: float | None = None) -> None:
    sale_timeline(run, out / "sale_timeline.png")
    latency_percentiles(run, out / "latency_percentiles.png")
    if scale:
        scale_out(scale, out / "scale_out.png", drain_goal)
