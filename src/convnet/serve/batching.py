"""Micro-batching: /predict requests that arrive together share one forward pass.

One `MicroBatcher` per model and TTA level. Each request puts its images in the batcher's
queue and awaits one future per image; a single worker task on the event loop takes images
from the queue, runs them through the model in a worker thread (the event loop never waits
on a forward pass) and hands each future its own slice of the answer.

When a batch forms:
- **Idle**: a request that finds the model free, with nothing else queued, and whose previous
  batch was a lone one too, runs at once. One client at a time pays no waiting.
- **Busy**: requests that arrive while a forward pass runs queue up, and the next batch takes
  all of them (up to `max_batch`) as soon as the pass ends.
- **Under load**: when other images are already queued, or the previous batch held more than
  one, the worker waits up to `wait_s` for more before it runs, so clients that send their next
  request right after their answer join the same batch instead of trickling in one by one.

A batch runs `run(items) -> results` (one result per item, in order). If it raises, every
request in the batch gets that exception. A request whose client went away (its future
cancelled) is skipped when the answers are handed out.
"""
from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")


class MicroBatcher(Generic[Item, Result]):
    """Collects items from concurrent requests into batches for `run`.

    Args:
        run: a blocking function items -> results (same length, same order); it runs in a
            worker thread, one batch at a time.
        max_batch: most items per call of `run`.
        wait_s: longest wait for more items under load (see the module docstring); 0 never waits.
    """

    def __init__(self, run: Callable[[list[Item]], Sequence[Result]], max_batch: int = 64, wait_s: float = 0.002):
        self._run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: deque[tuple[Item, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._last_batch = 1
        # batch size -> how many batches of that size ran (bounded: sizes <= max_batch)
        self.batch_sizes: Counter[int] = Counter()

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """The results for `items`, computed in whichever batches they land in.

        Raises:
            Whatever `run` raised for a batch holding one of the items.
        """
        loop = asyncio.get_running_loop()
        wake = self._wake
        if wake is None or self._worker is None or self._worker.done():
            # Made on first use: the batcher may be built before the server's event loop exists.
            wake = self._wake = asyncio.Event()
            self._worker = loop.create_task(self._serve(wake))
        futures = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        wake.set()
        results = await asyncio.gather(*futures, return_exceptions=True)  # every future retrieved, none left to warn
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return cast(list[Result], results)

    async def close(self) -> None:
        """Stop the worker (at server shutdown); queued requests, and those of a batch being run, are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()

    def _take(self, n: int) -> list[tuple[Item, asyncio.Future]]:
        taken: list[tuple[Item, asyncio.Future]] = []
        while self._queue and len(taken) < n:
            item, future = self._queue.popleft()
            if not future.done():  # a cancelled request needs no forward pass
                taken.append((item, future))
        return taken

    async def _serve(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            while self._queue:
                await self._run_one_batch()

    async def _run_one_batch(self) -> None:
        batch = self._take(self.max_batch)
        try:
            await self._run_taken(batch)
        except asyncio.CancelledError:
            # close() while this batch waited or ran: its requests end too, none left waiting
            for _, future in batch:
                future.cancel()
            raise

    async def _run_taken(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        under_load = len(batch) > 1 or self._last_batch > 1
        if under_load and self.wait_s > 0 and len(batch) < self.max_batch:
            await asyncio.sleep(self.wait_s)
            batch += self._take(self.max_batch - len(batch))  # the caller's list: a cancellation reaches these too
        if not batch:
            return
        self._last_batch = len(batch)
        self.batch_sizes[len(batch)] += 1
        items = [item for item, _ in batch]
        try:
            results = await asyncio.to_thread(self._run, items)
            if len(results) != len(items):
                raise RuntimeError(f"a batch of {len(items)} items came back with {len(results)} results")
        except Exception as e:  # handed to every request of the batch; the worker goes on with the next
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
