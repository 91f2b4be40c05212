"""Micro-batching: concurrent requests are answered by one batched call.

`MicroBatcher(fn)` owns one worker thread, the only caller of `fn`, so `fn` may use a model
that must not run two forwards at once. `submit(query)` blocks until the result is there. The
worker takes the first waiting query, then collects more until `max_batch` queries or until
`window_ms` after the first one arrived, and calls `fn(queries) -> results` once. Queries that
arrive while a batch runs form the next batch, so under load batches fill up without waiting.

With `enabled=False` each `submit` calls `fn([query])` in the caller's thread under a lock
(still one model call at a time, no batching).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Q = TypeVar("Q")
R = TypeVar("R")

log = logging.getLogger("freshrec.serve")


class BatcherClosedError(RuntimeError):
    """The batcher was closed; no more queries are answered."""


@dataclass
class _Job(Generic[Q, R]):
    query: Q
    future: Future = field(default_factory=Future)
    t_in: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[Q, R]):
    """Groups concurrent `submit` calls into calls of `fn(list[Q]) -> list[R]` (same order).

    on_batch(size, seconds) is called after every batch (metrics).
    """

    def __init__(
        self,
        fn: Callable[[list[Q]], Sequence[R]],
        *,
        max_batch: int = 32,
        window_ms: float = 2.0,
        enabled: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
        name: str = "batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.window_s = max(float(window_ms), 0.0) / 1000.0
        self.enabled = enabled
        self.on_batch = on_batch
        self.name = name
        self._queue: queue.SimpleQueue[_Job[Q, R] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the direct path (enabled=False)
        self._closed = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> MicroBatcher[Q, R]:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker; queries still queued fail with BatcherClosedError."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.future.done():
                job.future.set_exception(BatcherClosedError("the service is shutting down"))

    # ------------------------------------------------------------------ use
    def submit(self, query: Q, timeout: float | None = None) -> R:
        """The result of `query` (re-raises what `fn` raised). TimeoutError after `timeout`."""
        if self._closed:
            raise BatcherClosedError("the service is shutting down")
        if not self.enabled:
            with self._lock:
                t0 = time.perf_counter()
                out = self.fn([query])[0]
                if self.on_batch is not None:
                    self.on_batch(1, time.perf_counter() - t0)
                return out
        future = self.submit_future(query)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"no result within {timeout} s") from None

    def submit_future(self, query: Q) -> Future:
        """Queue `query` and return the Future of its result (batching on only); cancelling
        the Future before its batch starts drops the query."""
        if self._closed:
            raise BatcherClosedError("the service is shutting down")
        if not self.enabled:
            raise RuntimeError("submit_future needs batching; call submit")
        if self._thread is None:
            self.start()
        job: _Job[Q, R] = _Job(query)
        self._queue.put(job)
        return job.future

    # ------------------------------------------------------------------ worker
    def _collect(self, first: _Job[Q, R]) -> tuple[list[_Job[Q, R]], bool]:
        batch = [first]
        deadline = first.t_in + self.window_s
        stop = False
        while len(batch) < self.max_batch:
            wait = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            batch.append(job)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._collect(first)
            jobs = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if jobs:
                t0 = time.perf_counter()
                try:
                    results = self.fn([j.query for j in jobs])
                    if len(results) != len(jobs):
                        raise RuntimeError(f"{len(results)} results for {len(jobs)} queries")
                except BaseException as exc:  # handed to every waiting caller
                    log.exception("batch of %d failed", len(jobs))
                    for j in jobs:
                        j.future.set_exception(exc)
                else:
                    for j, r in zip(jobs, results, strict=True):
                        j.future.set_result(r)
                if self.on_batch is not None:
                    self.on_batch(len(jobs), time.perf_counter() - t0)
            if stop:
                return
