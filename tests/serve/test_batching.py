"""The micro-batcher on its own: who shares a batch, who waits, and that every request gets its own slice.

No test sleeps to let something happen: a batch that must be running when the test goes on is held
in the worker thread until the test releases it, so each expected batch follows from the rules in
`convnet.serve.batching`'s docstring alone, however busy the machine.
"""
from __future__ import annotations

import asyncio
import threading

import pytest

from convnet.serve.batching import MicroBatcher

JOIN_S = 30  # a bound on waits that end at once when the code is right; only a hang would reach it


class Recorder:
    """A `run` that doubles its items and records each batch; optionally failing on one item, or holding its
    first batch (`started` set) until `release` is set."""

    def __init__(self, fail_on: int | None = None, hold_first: bool = False):
        self.fail_on = fail_on
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.started, self.release = threading.Event(), threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        self.started.set()
        assert self.release.wait(JOIN_S), "the test never released the held batch"
        if self.fail_on in items:
            raise ValueError(f"item {self.fail_on} is bad")
        return [2 * x for x in items]


async def held_batch_running(run: Recorder) -> None:
    """Return once `run`'s first batch is running in the worker thread (where it stays until released)."""
    assert await asyncio.to_thread(run.started.wait, JOIN_S), "the first batch never started"


def test_a_lone_request_runs_at_once_and_off_the_event_loop():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, wait_s=3600.0)  # a wait it must not take: the timeout below would end it

    async def main():
        return await asyncio.wait_for(batcher.submit([5]), timeout=JOIN_S)

    assert asyncio.run(main()) == [10] and run.batches == [[5]]
    assert threading.get_ident() not in run.threads


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=16, wait_s=0.01)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, 100 + i]) for i in range(20)))

    answers = asyncio.run(main())
    assert answers == [[2 * i, 2 * (100 + i)] for i in range(20)]
    # All 20 requests queue before the worker's first step (asyncio runs ready tasks in order), so the
    # first batch is the first 16 items in arrival order (max_batch holds) and the next takes the other 24.
    arrived = [x for i in range(20) for x in (i, 100 + i)]
    assert run.batches == [arrived[:16], arrived[16:32], arrived[32:]]
    assert batcher.batch_sizes == {16: 2, 8: 1}


def test_a_failing_batch_fails_its_requests_only():
    run = Recorder(fail_on=3)
    batcher = MicroBatcher(run, max_batch=2, wait_s=0.0)

    async def main():
        return await asyncio.gather(*(batcher.submit([i]) for i in range(6)), return_exceptions=True)

    answers = asyncio.run(main())
    assert run.batches == [[0, 1], [2, 3], [4, 5]]
    failed = [i for i, a in enumerate(answers) if isinstance(a, ValueError)]
    assert failed == [2, 3]  # the bad item's batch and no other
    assert all(answers[i] == [2 * i] for i in range(6) if i not in failed)


@pytest.mark.parametrize("wait_s", [0.0, 0.005])
def test_requests_arriving_while_a_batch_runs_join_the_next(wait_s):
    run = Recorder(hold_first=True)
    batcher = MicroBatcher(run, max_batch=64, wait_s=wait_s)

    async def main():
        first = asyncio.ensure_future(batcher.submit([0]))
        await held_batch_running(run)  # a lone request: its batch runs at once, and is held there
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 9)]
        await asyncio.sleep(0)  # one turn of the loop: each of the 8 requests has queued its item
        run.release.set()
        return await asyncio.wait_for(asyncio.gather(first, *rest), timeout=JOIN_S)

    assert asyncio.run(main()) == [[2 * i] for i in range(9)]
    assert run.batches == [[0], list(range(1, 9))]


def test_closing_while_a_batch_runs_cancels_its_requests_instead_of_leaving_them_waiting():
    run = Recorder(hold_first=True)
    batcher = MicroBatcher(run, max_batch=8, wait_s=0.0)

    async def main():
        request = asyncio.ensure_future(batcher.submit([1, 2]))
        await held_batch_running(run)
        await batcher.close()
        outcome = await asyncio.wait_for(asyncio.gather(request, return_exceptions=True), timeout=JOIN_S)
        run.release.set()  # let the worker thread finish; nobody is waiting for its answer now
        return outcome

    (outcome,) = asyncio.run(main())
    assert run.batches == [[1, 2]]
    assert isinstance(outcome, asyncio.CancelledError)
