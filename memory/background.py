"""Background extraction that cannot pile up on a busy model server.

Each chat turn asks the model server for an extraction after the answer is sent. On a
small CPU-served model one extraction can take longer than the next turn, so without a
bound the requests queue up and the server spends its time on stale work. Here each user
has at most one extraction running and at most ``per_user`` turns waiting; a newer turn
pushes out the oldest waiting one (the newest turn carries the freshest facts, and mem0
keeps recent messages as context anyway). Users are served in turn by a few worker
threads, so one user's slow extraction does not hold up another's.

The workers are daemon threads, not a ``ThreadPoolExecutor``: the executor's threads are
joined at interpreter exit, so a request hanging on the model server held shutdown for
its whole timeout. :meth:`ExtractionQueue.close` drops what has not started and gives
what is running a short grace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Job(Generic[T]):
    user_id: str
    run: Callable[[], T]
    future: Future[T] = field(default_factory=Future)


class ExtractionQueue(Generic[T]):
    """Runs jobs keyed by user: one running per user, a few waiting, the oldest dropped.

    Every future returned by :meth:`submit` completes: with the job's result, or with
    ``empty`` when the job is dropped (pushed out, or the queue closed before it started).
    Jobs must not raise; whatever they raise is logged and turned into ``empty``.
    """

    def __init__(
        self, *, workers: int, per_user: int, empty: Callable[[], T], name: str = "memory-remember"
    ) -> None:
        self.workers = workers
        self.per_user = per_user
        self._empty = empty
        self._name = name
        self._cond = threading.Condition()
        self._waiting: dict[str, deque[_Job[T]]] = {}
        self._running: set[str] = set()
        self._turns: deque[str] = deque()
        """Users with a waiting job and none running, in the order they became ready."""
        self._dropped: dict[str, int] = {}
        """Turns dropped per user since the user's queue was last empty (for the log)."""
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def waiting(self, user_id: str) -> int:
        """How many of the user's jobs wait (not counting one running)."""
        with self._cond:
            return len(self._waiting.get(user_id, ()))

    def running(self) -> int:
        """How many jobs are running now."""
        with self._cond:
            return len(self._running)

    def submit(self, user_id: str, run: Callable[[], T]) -> Future[T]:
        """Queue ``run`` for ``user_id``; returns its future at once."""
        job: _Job[T] = _Job(user_id, run)
        pushed_out: _Job[T] | None = None
        with self._cond:
            if self._closed:
                job.future.set_result(self._empty())
                logger.warning("memory: closed; not remembering this turn of user %r", user_id)
                return job.future
            self._start_workers()
            queue = self._waiting.setdefault(user_id, deque())
            queue.append(job)
            if len(queue) > self.per_user:
                pushed_out = queue.popleft()
                self._dropped[user_id] = self._dropped.get(user_id, 0) + 1
                dropped = self._dropped[user_id]
            elif len(queue) == 1 and user_id not in self._running:
                self._turns.append(user_id)
                self._cond.notify()
        if pushed_out is not None:
            pushed_out.future.set_result(self._empty())
            logger.warning(
                "memory: the model server is busy with an earlier turn of user %r; dropped the "
                "oldest waiting turn (%d dropped so far, at most MEMORY_QUEUE_PER_USER=%d wait)",
                user_id,
                dropped,
                self.per_user,
            )
        return job.future

    def _start_workers(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _next(self) -> _Job[T] | None:
        """The next job to run, waiting for one; ``None`` once closed."""
        with self._cond:
            while not self._turns and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            user_id = self._turns.popleft()
            queue = self._waiting[user_id]
            job = queue.popleft()
            if not queue:
                del self._waiting[user_id]
            self._running.add(user_id)
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                result = job.run()
            except Exception:  # a job must not kill its worker
                logger.exception("memory: background job for user %r failed", job.user_id)
                result = self._empty()
            job.future.set_result(result)
            with self._cond:
                self._running.discard(job.user_id)
                if job.user_id in self._waiting:
                    self._turns.append(job.user_id)
                else:
                    self._dropped.pop(job.user_id, None)
                self._cond.notify_all()  # a worker for the user's next turn, or close()

    def close(self, grace_s: float) -> bool:
        """Drop waiting jobs, give running ones ``grace_s``; ``True`` if none still runs."""
        with self._cond:
            if self._closed:
                return not self._running
            self._closed = True
            dropped = [job for queue in self._waiting.values() for job in queue]
            users = len(self._waiting)
            self._waiting.clear()
            self._turns.clear()
            self._cond.notify_all()
        for job in dropped:
            job.future.set_result(self._empty())
        if dropped:
            logger.info(
                "memory: closing; dropped %d queued extraction(s) of %d user(s)",
                len(dropped),
                users,
            )
        deadline = time.monotonic() + grace_s
        with self._cond:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            still = len(self._running)
        if still:
            logger.warning(
                "memory: closing; %d extraction(s) still running after "
                "MEMORY_CLOSE_GRACE_S=%.1fs, not waiting for them",
                still,
                grace_s,
            )
        return not still
