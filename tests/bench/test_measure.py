"""bench/measure.py (issue 18 point 5): the rest bench's servers take turns, and the
turns together make exactly the requests asked for."""

from __future__ import annotations

from bench.measure import ROUNDS, _shares


def test_the_turns_make_the_requests_asked_for() -> None:
    assert _shares(3000) == [1000] * ROUNDS
    assert _shares(10) == [4, 3, 3]
    assert _shares(2) == [1, 1]
    for total in range(50):
        assert sum(_shares(total)) == total
        assert all(count > 0 for count in _shares(total)) or total == 0
