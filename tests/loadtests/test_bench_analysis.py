import numpy as np

from loadtests.analysis import Samples, answered_figures, parse_stage_profile

INPROCESS_OUTPUT = """event_read         1431 us CPU/request  (0.26x health)
self time by stage:
sql              34.6%
other            33.5%
rendering        14.2%

         123456 function calls in 1.234 seconds
   ncalls  tottime  percall  cumtime  percall filename:lineno(function)
"""


def test_the_stage_profile_is_read_from_the_printed_table():
    parsed = parse_stage_profile(INPROCESS_OUTPUT)

    assert parsed["cpu_us_per_request"] == {"event_read": 1431.0}
    assert parsed["stages"] == {"sql": 34.6, "other": 33.5, "rendering": 14.2}


def test_an_output_without_a_stage_table_gives_no_stages():
    assert parse_stage_profile("Traceback (most recent call last):\n  boom\n") == {
        "cpu_us_per_request": {},
        "stages": {},
    }


def _samples(outcomes: list[str], latencies: list[float]) -> Samples:
    n = len(outcomes)
    return Samples(
        t=np.arange(n, dtype=float),
        latency=np.array(latencies),
        kind=np.array(["buy"] * n),
        outcome=np.array(outcomes),
        qty=np.ones(n, dtype=int),
        order_id=np.zeros(n, dtype=np.int64),
    )


def test_socket_errors_and_late_answers_are_not_answers_but_a_busy_503_is():
    samples = _samples(
        [
            "accepted",
            "busy_service_unavailable",
            "error_timeout",
            "error_ConnectionResetError",
            "error_500",
            "sold_out",
        ],
        [0.1, 0.2, 10.0, 0.1, 0.3, 11.0],
    )

    figures = answered_figures(samples, within=10.0)

    assert figures["requests"] == 6
    assert figures["unanswered"] == 2
    assert figures["answered_late"] == 1
    assert figures["busy_answers"] == 1
    assert figures["server_errors"] == 1
