"""`manage.py queues`: the operators' queue summary in a terminal (`--watch` to repeat)."""

import json
import time

from django.core.management.base import BaseCommand

from core.ops import queue_summary


class Command(BaseCommand):
    help = "Print queue depths, pending orders, live workers, gate agreement and lines."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="print the raw JSON document"
        )
        parser.add_argument("--watch", type=float, default=0, help="repeat every N seconds")
        parser.add_argument("--count", type=int, default=0, help="with --watch: stop after N")

    def handle(self, *args, as_json: bool = False, watch: float = 0, count: int = 0, **options):
        shown = 0
        while True:
            summary = queue_summary()
            self.stdout.write(self._render(summary, as_json=as_json))
            shown += 1
            if not watch or (count and shown >= count):
                return
            time.sleep(watch)

    @staticmethod
    def _render(summary: dict, *, as_json: bool) -> str:
        if as_json:
            return json.dumps(summary, indent=2)
        orders = summary["orders"]
        lines = [f"checked at {summary['checked_at']}"]
        lines += [
            f"queue {name:<10} {depth:>8} waiting" for name, depth in summary["queues"].items()
        ]
        lines.append(
            f"orders pending {orders['pending']} (oldest {orders['oldest_pending_seconds']}s), "
            f"finalized in the last minute {orders['finalized_last_minute']}"
        )
        lines.append(
            f"workers alive {len(summary['workers'])}: {', '.join(summary['workers']) or '-'}"
        )
        for row in summary["events"]:
            flag = "ok" if row["agrees"] else "DISAGREES"
            lines.append(
                f"event {row['event']:>6} gate {row['gate_remaining']!s:>8} "
                f"database {row['database_remaining']:>8}  {flag}"
            )
            lines.append(
                f"             line {row['line_length']:>8} waiting, oldest "
                f"{row['oldest_waiting_seconds']}s, served {row['served_per_second']}/s"
            )
        for row in summary.get("waiting_rooms", []):
            lines.append(
                f"room  {row['event']:>6} joined {row['joined']:>8} waiting {row['waiting']:>8} "
                f"serving {row['serving']:>8} admitted {row['admitted_per_second']}/s, "
                f"not bought {row['admitted_not_bought']}, expired {row['expired']}, "
                f"capacity {row['capacity']}" + ("" if row["admitting"] else " (not admitting)")
            )
        for row in summary.get("waitlists", []):
            lines.append(
                f"list  {row['event']:>6} waiting {row['waiting']:>8} offers out "
                f"{row['offers_out']:>6} taken {row['offers_taken']} expired "
                f"{row['offers_expired']}" + (" (paused)" if row["paused"] else "")
            )
        return "\n".join(lines)
