from loadtests.bench import summarize


def test_numbers_take_the_median_of_the_runs():
    runs = [
        {"sale": {"req_per_s": 300.0}},
        {"sale": {"req_per_s": 100.0}},
        {"sale": {"req_per_s": 200.0}},
    ]

    assert summarize(runs) == {"sale": {"req_per_s": 200.0}}


def test_an_outcome_seen_in_some_runs_only_takes_the_median_of_those():
    runs = [
        {"sale": {"outcomes": {"accepted": 10, "insufficient_tickets": 1}}},
        {"sale": {"outcomes": {"accepted": 30}}},
        {"sale": {"outcomes": {"accepted": 20, "insufficient_tickets": 3}}},
    ]

    assert summarize(runs) == {"sale": {"outcomes": {"accepted": 20, "insufficient_tickets": 2.0}}}


def test_private_keys_and_text_are_kept_from_the_first_run():
    runs = [{"_raw": [1], "event": "a", "ok": True}, {"_raw": [2], "event": "b", "ok": False}]

    assert summarize(runs) == {"event": "a", "ok": True}


def test_the_run_completion_mark_is_not_a_figure():
    runs = [{"_complete": True, "sale": {"rps": 1.0}}, {"_complete": True, "sale": {"rps": 3.0}}]

    assert summarize(runs) == {"sale": {"rps": 2.0}}
