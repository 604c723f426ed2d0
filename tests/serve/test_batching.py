"""The micro-batcher on its own: who shares a batch, who waits, and that every request gets its own slice."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from convnet.serve.batching import MicroBatcher


class Recorder:
    """A `run` that doubles its items and records each batch; optionally slow, or failing on one item."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None):
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.get_ident())
        time.sleep(self.seconds)
        if self.fail_on in items:
            raise ValueError(f"item {self.fail_on} is bad")
        return [2 * x for x in items]


def test_a_lone_request_runs_at_once_and_off_the_event_loop():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=8, wait_s=1.0)  # a wait it must not take

    async def main():
        start = time.perf_counter()
        got = await batcher.submit([5])
        return got, time.perf_counter() - start

    got, elapsed = asyncio.run(main())
    assert got == [10] and run.batches == [[5]]
    assert elapsed < 0.5
    assert threading.get_ident() not in run.threads


def test_concurrent_requests_share_batches_and_get_their_own_answers():
    run = Recorder(seconds=0.05)
    batcher = MicroBatcher(run, max_batch=16, wait_s=0.01)

    async def main():
        return await asyncio.gather(*(batcher.submit([i, 100 + i]) for i in range(20)))

    answers = asyncio.run(main())
    assert answers == [[2 * i, 2 * (100 + i)] for i in range(20)]
    assert max(len(b) for b in run.batches) == 16  # max_batch holds
    assert len(run.batches) <= 4  # 40 items in batches, not one forward pass each
    assert sorted(x for b in run.batches for x in b) == sorted([*range(20), *range(100, 120)])
    assert sum(batcher.batch_sizes.values()) == len(run.batches)


def test_a_failing_batch_fails_its_requests_only():
    run = Recorder(seconds=0.02, fail_on=3)
    batcher = MicroBatcher(run, max_batch=2, wait_s=0.0)

    async def main():
        return await asyncio.gather(*(batcher.submit([i]) for i in range(6)), return_exceptions=True)

    answers = asyncio.run(main())
    failed = [i for i, a in enumerate(answers) if isinstance(a, ValueError)]
    assert 3 in failed and len(failed) <= 2  # the bad item's batch (at most 2 items) and no other
    assert all(answers[i] == [2 * i] for i in range(6) if i not in failed)


@pytest.mark.parametrize("wait_s", [0.0, 0.005])
def test_requests_arriving_while_a_batch_runs_join_the_next(wait_s):
    run = Recorder(seconds=0.05)
    batcher = MicroBatcher(run, max_batch=64, wait_s=wait_s)

    async def main():
        first = asyncio.create_task(batcher.submit([0]))
        await asyncio.sleep(0.01)  # the first batch is running now
        rest = await asyncio.gather(*(batcher.submit([i]) for i in range(1, 9)))
        return [await first, *rest]

    assert asyncio.run(main()) == [[2 * i] for i in range(9)]
    assert run.batches == [[0], list(range(1, 9))]


def test_closing_while_a_batch_runs_cancels_its_requests_instead_of_leaving_them_waiting():
    run = Recorder(seconds=0.3)
    batcher = MicroBatcher(run, max_batch=8, wait_s=0.0)

    async def main():
        request = asyncio.ensure_future(batcher.submit([1, 2]))
        await asyncio.sleep(0.05)  # its batch is now running in the worker thread
        await batcher.close()
        return await asyncio.wait_for(asyncio.gather(request, return_exceptions=True), timeout=2.0)

    (outcome,) = asyncio.run(main())
    assert run.batches == [[1, 2]]
    assert isinstance(outcome, asyncio.CancelledError)
