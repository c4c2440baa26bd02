"""The API bench's arithmetic: wrk's report read right, and each endpoint's ratio taken to the
floor measured around its own round, reported as the median over the rounds."""

from __future__ import annotations

import pytest

from bench.api import parse_wrk, summarize

WRK_OUT = """Running 3s test @ http://127.0.0.1:8000/api/system/gpus
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    23.12ms   10.01ms  96.10ms   80.00%
    Req/Sec     1.10k   100.00     1.30k    70.00%
  Latency Distribution
     50%   21.04ms
     75%   28.00ms
     90%   35.00ms
     99%  850.00us
  6612 requests in 3.00s, 5.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2203.51
Transfer/sec:      1.70MB
"""


def test_wrk_report_is_read():
    figures = parse_wrk(WRK_OUT)
    assert figures == {
        "requests": 6612,
        "errors": 4 + 3,
        "p50": pytest.approx(21.04),
        "p99": pytest.approx(0.85),
        "rps": pytest.approx(2203.51),
    }


def _run(rps: float) -> dict[str, float]:
    return {"requests": int(rps * 3), "errors": 0, "p50": 1000 / rps, "p99": 2000 / rps, "rps": rps}


def test_each_round_is_compared_to_the_floor_around_it():
    """The box slows down during the run: the floor falls from 4000 to 2000 req/s. Measured
    against the floors around their own rounds, the endpoint keeps its ratio of 0.5 each time;
    against the run's mean floor it would read 0.58, then 0.5, then 0.42."""
    floors = [_run(4000), _run(3000), _run(3000), _run(2000)]
    rounds = [[_run(1750)], [_run(1500)], [_run(1250)]]
    (endpoint,) = summarize(floors, rounds)
    assert endpoint["ratio"] == pytest.approx(0.5)
    assert endpoint["ratio_low"] == pytest.approx(0.5)
    assert endpoint["ratio_high"] == pytest.approx(0.5)
    assert endpoint["rps"] == 1500
    assert endpoint["requests"] == 5250 + 4500 + 3750


def test_one_bad_round_does_not_decide_the_figure():
    floors = [_run(3000)] * 4
    rounds = [[_run(1800), _run(900)], [_run(600), _run(900)], [_run(1950), _run(600)]]
    gpus, other = summarize(floors, rounds)
    assert gpus["ratio"] == pytest.approx(0.6)
    assert (gpus["ratio_low"], gpus["ratio_high"]) == (pytest.approx(0.2), pytest.approx(0.65))
    assert other["ratio"] == pytest.approx(0.3)
