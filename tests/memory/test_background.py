"""The extraction queue on its own: real threads running jobs that wait on events."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from memory.background import ExtractionQueue

WAIT_S = 10.0  # generous: 2 shared cores


class Jobs:
    """Jobs that record when they run and block until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started: list[str] = []
        self.running: dict[str, int] = {}
        self.most_running: dict[str, int] = {}
        self._changed = threading.Condition()

    def job(self, user: str, name: str) -> Callable[[], list[str]]:
        def run() -> list[str]:
            with self._changed:
                self.started.append(name)
                self.running[user] = self.running.get(user, 0) + 1
                self.most_running[user] = max(self.most_running.get(user, 0), self.running[user])
                self._changed.notify_all()
            self.release.wait(WAIT_S)
            with self._changed:
                self.running[user] -= 1
            return [name]

        return run

    def wait_started(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.started) >= count, WAIT_S), self.started


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    made = Jobs()
    yield made
    made.release.set()


def test_one_running_per_user_and_the_oldest_waiting_is_dropped(
    jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    queue: ExtractionQueue[list[str]] = ExtractionQueue(workers=4, per_user=2, empty=list)
    first = queue.submit("ana", jobs.job("ana", "ana-0"))
    jobs.wait_started(1)

    with caplog.at_level(logging.WARNING, logger="memory"):
        later = [queue.submit("ana", jobs.job("ana", f"ana-{i}")) for i in range(1, 5)]

    # ana-1 and ana-2 were pushed out by ana-3 and ana-4, at once and logged.
    assert [f.result(timeout=1) for f in later[:2]] == [[], []]
    assert not later[2].done() and not later[3].done()
    assert queue.waiting("ana") == 2 and queue.running() == 1
    drops = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drops) == 2 and all("'ana'" in m for m in drops), drops
    assert "2 dropped so far" in drops[-1]

    jobs.release.set()
    assert first.result(timeout=WAIT_S) == ["ana-0"]
    assert [f.result(timeout=WAIT_S) for f in later[2:]] == [["ana-3"], ["ana-4"]]
    assert jobs.started == ["ana-0", "ana-3", "ana-4"]
    assert jobs.most_running["ana"] == 1
    assert queue.close(grace_s=1.0)


def test_users_do_not_wait_on_each_other(jobs: Jobs) -> None:
    queue: ExtractionQueue[list[str]] = ExtractionQueue(workers=2, per_user=1, empty=list)
    queue.submit("ana", jobs.job("ana", "ana-0"))
    jobs.wait_started(1)  # until it starts, a newer turn of ana's would push it out
    second = queue.submit("ana", jobs.job("ana", "ana-1"))  # waits behind ana-0
    ben = queue.submit("ben", jobs.job("ben", "ben-0"))

    jobs.wait_started(2)  # ben's job runs beside ana's, ahead of ana's second

    assert sorted(jobs.started) == ["ana-0", "ben-0"]
    jobs.release.set()
    assert ben.result(timeout=WAIT_S) == ["ben-0"]
    assert second.result(timeout=WAIT_S) == ["ana-1"]
    assert jobs.started[-1] == "ana-1"
    assert queue.close(grace_s=WAIT_S)


def test_close_drops_waiting_jobs_and_does_not_wait_past_the_grace(
    jobs: Jobs, caplog: pytest.LogCaptureFixture
) -> None:
    queue: ExtractionQueue[list[str]] = ExtractionQueue(workers=4, per_user=3, empty=list)
    running = queue.submit("ana", jobs.job("ana", "ana-0"))
    jobs.wait_started(1)
    waiting = [queue.submit("ana", jobs.job("ana", f"ana-{i}")) for i in (1, 2, 3)]
    waiting.append(queue.submit("ben", jobs.job("ben", "ben-0")))
    jobs.wait_started(2)  # ana-0 and ben-0 run; ana-1..3 wait
    waiting.pop()  # ben-0 runs too

    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="memory"):
        assert queue.close(grace_s=0.3) is False
    assert time.perf_counter() - started < 0.3 + 1.0

    assert [f.result(timeout=0) for f in waiting] == [[], [], []]
    messages = [r.getMessage() for r in caplog.records]
    assert any("dropped 3 queued extraction(s) of 1 user(s)" in m for m in messages), messages
    assert any("2 extraction(s) still running" in m for m in messages), messages
    assert queue.submit("ana", jobs.job("ana", "late")).result(timeout=0) == []

    jobs.release.set()  # the running ones end on their own
    assert running.result(timeout=WAIT_S) == ["ana-0"]
    assert "ana-1" not in jobs.started and "late" not in jobs.started


def test_close_waits_for_a_running_job_within_the_grace(jobs: Jobs) -> None:
    queue: ExtractionQueue[list[str]] = ExtractionQueue(workers=1, per_user=1, empty=list)
    running = queue.submit("ana", jobs.job("ana", "ana-0"))
    jobs.wait_started(1)
    threading.Timer(0.2, jobs.release.set).start()

    assert queue.close(grace_s=WAIT_S) is True
    assert running.done() and running.result() == ["ana-0"]


def test_a_failing_job_gives_the_empty_result_and_the_worker_lives_on() -> None:
    queue: ExtractionQueue[list[str]] = ExtractionQueue(workers=1, per_user=1, empty=list)

    def broken() -> list[str]:
        raise RuntimeError("a bug")

    assert queue.submit("ana", broken).result(timeout=WAIT_S) == []
    assert queue.submit("ana", lambda: ["fine"]).result(timeout=WAIT_S) == ["fine"]
    assert queue.close(grace_s=1.0)
