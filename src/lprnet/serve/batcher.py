"""Dynamic batching: images from concurrent requests share one network call.

:class:`Batcher` keeps a queue of decoded BGR images, each with a future.  A single worker task
waits for the first image, then gathers more until ``max_batch`` images are waiting or
``max_wait_ms`` has passed since the first one arrived; it runs ``Recognizer.predict_logits`` on
the batch in a dedicated worker thread (one inference at a time, the event loop stays free),
decodes with :meth:`~lprnet.recognizer.Recognizer.decode_logits` and resolves the futures.  The deploy
model is batch-independent, so a result does not depend on its batch-mates.

:meth:`Batcher.close` stops accepting work, runs what is already queued, and waits for the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from lprnet.core.process import Prediction
from lprnet.recognizer import Recognizer

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """Raised by :meth:`Batcher.submit` once the batcher is shutting down."""


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future[Prediction]
    queued_at: float


class Batcher:
    """Gathers images from concurrent callers into batches for one recognizer.

    ``on_batch(size, seconds)`` is called after each network call (for metrics).
    """

    def __init__(self, recognizer: Recognizer, *, max_batch: int = 32, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.recognizer = recognizer
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.on_batch = on_batch
        self._pending: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done() and not self._closing

    @property
    def queued(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is not None:
            raise RuntimeError("batcher already started")
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lprnet-infer")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="lprnet-batcher")

    async def submit(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Queue BGR uint8 images and wait for their predictions (in order)."""
        if self._closing or self._worker is None or self._wakeup is None:
            raise BatcherClosed("the recognizer is not accepting work (shutting down)")
        if not images:
            return []
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [_Item(img, loop.create_future(), now) for img in images]
        self._pending.extend(items)
        self._wakeup.set()
        done = await asyncio.gather(*(it.future for it in items), return_exceptions=True)
        for r in done:
            if isinstance(r, BaseException):
                raise r
        return list(done)  # type: ignore[arg-type]

    def hurry(self) -> None:
        """From now on, run what is queued at once rather than wait for batch-mates (the server is shutting down:
        no more are coming). Call it on the event loop's thread (``loop.call_soon_threadsafe``)."""
        self.max_wait = 0.0
        if self._wakeup is not None:
            self._wakeup.set()

    async def close(self) -> None:
        """Stop accepting work, finish everything queued, and stop the worker."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            first = self._pending[0].queued_at
            while len(self._pending) < self.max_batch and not self._closing:
                remaining = first + self.max_wait - loop.time()  # max_wait drops to 0 when shutdown begins
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            live = [it for it in batch if not it.future.done()]  # a caller may have gone away
            if live:
                await self._process(live)

    def _infer(self, images: list[np.ndarray]) -> list[Prediction]:
        return self.recognizer.decode_logits(self.recognizer.predict_logits(images))

    async def _process(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            preds = await loop.run_in_executor(self._executor, self._infer, [it.image for it in batch])
        except Exception as e:  # the model failed: every caller in this batch gets the error
            log.exception("inference failed on a batch of %d", len(batch))
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(e)
            return
        if self.on_batch is not None:
            try:
                self.on_batch(len(batch), loop.time() - t0)
            except Exception:  # metrics must never stop the worker
                log.exception("on_batch callback failed")
        for it, p in zip(batch, preds, strict=True):
            if not it.future.done():
                it.future.set_result(p)
