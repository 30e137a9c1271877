"""Figures from the load generator's samples: throughput, latency percentiles, timelines."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The first second of a timed run is left out of steady-state figures: it includes the
# first database connection of each server process and the clients' ramp.
WARMUP_SECONDS = 1.0
FLOOD_WARMUP_SECONDS = 1.0  # polls of the last orders still run in the first second after sold out


@dataclass
class Samples:
    t: np.ndarray  # request start, epoch seconds
    latency: np.ndarray  # seconds
    kind: np.ndarray  # get | buy | poll
    outcome: np.ndarray  # ok, accepted, confirmed, sold_out, insufficient_tickets, pending, ...
    qty: np.ndarray
    order_id: np.ndarray
    # A 202's estimated_wait_seconds (NaN: none given, or samples without the column).
    estimate: np.ndarray | None = None

    @classmethod
    def load(cls, path: Path) -> Samples:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        cols = list(zip(*rows, strict=True)) if rows else [[]] * 7
        estimates = cols[6] if len(cols) > 6 else [""] * len(cols[0])
        return cls(
            t=np.array(cols[0], dtype=float),
            latency=np.array(cols[1], dtype=float),
            kind=np.array(cols[2], dtype=str),
            outcome=np.array(cols[3], dtype=str),
            qty=np.array(cols[4], dtype=int),
            order_id=np.array(cols[5], dtype=np.int64),
            estimate=np.array([float(e) if e else np.nan for e in estimates], dtype=float),
        )

    @classmethod
    def merge(cls, directory: Path, merged: Path) -> Samples:
        """Every process's samples-*.csv in one CSV (sorted by start time), loaded."""
        rows, header = [], None
        for path in sorted(directory.glob("samples-*.csv")):
            lines = path.read_text().splitlines()
            header = header or lines[0]
            rows += lines[1:]
        rows.sort(key=lambda line: float(line.split(",", 1)[0]))
        merged.write_text(
            "\n".join([header or "t,latency,kind,outcome,qty,order_id", *rows]) + "\n"
        )
        return cls.load(merged)

    @property
    def end(self) -> np.ndarray:
        return self.t + self.latency

    def mask(self, *, kind=None, outcome=None, start=None, stop=None) -> np.ndarray:
        """Select samples by kind/outcome and by request start time in [start, stop)."""
        keep = np.ones(len(self.t), dtype=bool)
        if kind is not None:
            keep &= self.kind == kind
        if outcome is not None:
            keep &= self.outcome == outcome
        if start is not None:
            keep &= self.t >= start
        if stop is not None:
            keep &= self.t < stop
        return keep


def latency_stats(latency: np.ndarray) -> dict:
    if len(latency) == 0:
        return {"count": 0}
    ms = latency * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "count": int(len(ms)),
        "mean_ms": round(float(ms.mean()), 2),
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def steady_state(samples: Samples, kind: str | None = None) -> dict:
    """Requests/s and latency after the warm-up, over requests that both start and end in the run."""
    if len(samples.t) == 0:
        return {"rps": 0.0, "count": 0}
    start = samples.t.min() + WARMUP_SECONDS
    stop = samples.end.max()
    keep = samples.mask(kind=kind, start=start) & (samples.end <= stop)
    seconds = stop - start
    return {
        "rps": round(float(keep.sum() / seconds), 1),
        "seconds": round(float(seconds), 2),
        **latency_stats(samples.latency[keep]),
        "errors": _errors(samples, keep),
    }


def window_rate(samples: Samples, start: float, stop: float, kind: str | None = None) -> float:
    """Requests of `kind` that started in [start, stop), per second."""
    if stop <= start:
        return 0.0
    return round(float(samples.mask(kind=kind, start=start, stop=stop).sum() / (stop - start)), 1)


def by_outcome(samples: Samples, keep: np.ndarray) -> dict[str, dict]:
    return {
        str(outcome): latency_stats(samples.latency[keep & (samples.outcome == outcome)])
        for outcome in sorted(set(samples.outcome[keep]))
    }


def _errors(samples: Samples, keep: np.ndarray) -> int:
    return int(sum(1 for o in samples.outcome[keep] if o.startswith("error_")))


def errors(samples: Samples) -> dict[str, int]:
    return dict(Counter(o for o in samples.outcome if o.startswith("error_")))


def rate_timeline(
    samples: Samples, origin: float, *, kind: str | None = None, bin_seconds: float = 0.25
) -> dict:
    """Completions per second in bins from `origin`, per outcome (for the charts)."""
    keep = samples.mask(kind=kind)
    ends = samples.end[keep] - origin
    outcomes = np.char.add(np.char.add(samples.kind[keep], " "), samples.outcome[keep])
    if len(ends) == 0:
        return {"t": [], "series": {}}
    edges = np.arange(min(0.0, ends.min()), ends.max() + bin_seconds, bin_seconds)
    series = {
        str(o): (np.histogram(ends[outcomes == o], edges)[0] / bin_seconds).round(1).tolist()
        for o in sorted(set(outcomes))
    }
    return {"t": edges[:-1].round(3).tolist(), "series": series}


def cumulative(times: np.ndarray, weights: np.ndarray, origin: float) -> dict:
    """A step series of the running total of `weights` at `times` (from `origin`)."""
    order = np.argsort(times)
    return {
        "t": (times[order] - origin).round(4).tolist(),
        "total": np.cumsum(weights[order]).tolist(),
    }


def answered_figures(samples: Samples, within: float) -> dict:
    """Did every request get an answer from the API within `within` seconds?

    The load generator records an HTTP status it cannot classify as error_<digits> and a socket
    error or time-out as error_<ExceptionName>: only the latter are unanswered. A 503 with a
    `code` (busy_<code>) is an answer."""
    outcome = samples.outcome.astype(str)
    no_answer = np.array(
        [o.startswith("error_") and not o[6:].isdigit() for o in outcome], dtype=bool
    )
    late = ~no_answer & (samples.latency > within)
    return {
        "requests": int(len(samples.t)),
        "unanswered": int(no_answer.sum()),
        "answered_late": int(late.sum()),
        "server_errors": int(np.char.startswith(outcome, "error_5").sum()) if len(outcome) else 0,
        "busy_answers": int(np.char.startswith(outcome, "busy_").sum()) if len(outcome) else 0,
        "latency": latency_stats(samples.latency),
    }


def parse_stage_profile(text: str) -> dict:
    """Read `python -m loadtests.inprocess --only E --profile E` output: CPU µs per request
    ("E   1234 us CPU/request") and the "self time by stage:" table ("stage  12.3%").

    Lines that match neither are ignored, so added output does not break the reading."""
    import re

    cpu: dict[str, float] = {}
    stages: dict[str, float] = {}
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("self time by stage"):
            in_table = True
            continue
        if in_table:
            found = re.match(r"^([A-Za-z_][\w /-]*?)\s+(\d+(?:\.\d+)?)\s*%", stripped)
            if found:
                stages[found.group(1)] = float(found.group(2))
                continue
            if stripped or stages:
                in_table = False
        found = re.match(r"^([A-Za-z_]\w*)\s+(\d+(?:\.\d+)?)\s*(?:us|µs)\s+CPU", stripped)
        if found:
            cpu[found.group(1)] = float(found.group(2))
    return {"cpu_us_per_request": cpu, "stages": stages}


def sale_window(samples: Samples, open_at: float) -> tuple[dict, float | None]:
    """A sale's figures between `open_at` and the first sold_out answer (or the last answer),
    as the benchmark's sale and the Locust run report them; and that sold-out moment."""
    sold_out = samples.mask(kind="buy", outcome="sold_out")
    sold_out_at = float(samples.end[sold_out].min()) if sold_out.any() else None
    end = sold_out_at or float(samples.end.max())
    in_window = samples.mask(kind="buy", start=open_at, stop=end)
    figures = {
        "sale_window_s": round(end - open_at, 3),
        "purchase_rps_in_sale_window": window_rate(samples, open_at, end, kind="buy"),
        "all_rps_in_sale_window": window_rate(samples, open_at, end),
        "purchase_latency_in_sale_window": latency_stats(samples.latency[in_window]),
        "purchases_by_outcome": by_outcome(samples, samples.mask(kind="buy")),
        "polls_by_outcome": by_outcome(samples, samples.mask(kind="poll")),
        "errors": errors(samples),
    }
    return figures, sold_out_at


def sale_figures(samples: Samples, cores) -> dict:
    """A Locust flash sale's figures (loadtests.run): the window runs from the first purchase
    (the sale is open before the first user arrives) to the first sold_out; the flood from a
    second after it. `cores(start, stop)`: CPU cores per role over a span."""
    buys = samples.mask(kind="buy")
    if not buys.any():
        return {"purchases": 0}
    open_at, last = float(samples.t[buys].min()), float(samples.end.max())
    window, sold_out_at = sale_window(samples, open_at)
    figures = {
        "sold_out_after_first_purchase_s": round(sold_out_at - open_at, 3) if sold_out_at else None,
        "orders_won": int(samples.mask(kind="buy", outcome="accepted").sum()),
        **window,
        "cpu_cores_in_sale_window": cores(open_at, sold_out_at or last),
        "sold_out": sold_out_at is not None,
    }
    start = (sold_out_at or 0) + FLOOD_WARMUP_SECONDS
    if sold_out_at and last - start >= 1.0:  # a flood cut short by --max-seconds says nothing
        flood = samples.mask(kind="buy", start=start) & (samples.end <= last)
        figures["flood"] = {
            "seconds": round(last - start, 2),
            "rps": round(float(flood.sum() / (last - start)), 1),
            **latency_stats(samples.latency[flood]),
            "cpu_cores": cores(start, last),
        }
    figures["cpu_cores_whole_run"] = cores(open_at, last)
    return figures
