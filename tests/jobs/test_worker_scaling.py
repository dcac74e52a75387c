"""The supervisor's decision (secstor.domain.worker_scaling.scaling_step), as a table."""

from __future__ import annotations

import pytest

from secstor.domain.worker_scaling import QueueLoad, scaling_step

pytestmark = pytest.mark.nodb


def step(depth, running, waited, *, workers=1, extra=0, max_extra=5, sessions=2, threshold=900.0):
    return scaling_step(QueueLoad(depth, running, waited), workers=workers, extra_workers=extra,
                        max_extra_workers=max_extra, sessions_per_worker=sessions, wait_threshold_seconds=threshold)


@pytest.mark.parametrize("case, expected", [
    # one worker, 2 sessions: one job waiting past the threshold is half the sessions
    (dict(depth=1, running=2, waited=901), 1),
    (dict(depth=1, running=2, waited=899), 0),  # not waited long enough
    (dict(depth=1, running=2, waited=901, workers=2), 0),  # 1 of 4 sessions: less than half
    (dict(depth=2, running=4, waited=901, workers=2), 1),
    (dict(depth=3, running=2, waited=901, sessions=6), 1),  # 3 of 6: half
    (dict(depth=2, running=2, waited=901, sessions=6), 0),
    (dict(depth=9, running=2, waited=9000, workers=3, extra=2, max_extra=2), 0),  # at max.ssvm.count
    (dict(depth=9, running=2, waited=9000, max_extra=0), 0),
    (dict(depth=0, running=0, waited=0, extra=3), -3),  # empty queue: every extra stops
    (dict(depth=0, running=1, waited=0, extra=3), 0),  # still running: they stay
    (dict(depth=0, running=0, waited=0, extra=0), 0),
    (dict(depth=1, running=0, waited=2, workers=0, threshold=1), 1),  # no worker at all serves the queue
])
def test_scaling_step(case, expected):
    assert step(**case) == expected
