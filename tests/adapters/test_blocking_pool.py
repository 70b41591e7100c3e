"""The blocking backend's session threads: reused while idle, never shared by two items at once."""

from __future__ import annotations

import signal
import threading

import pytest

from smtpproto_adapters import _blocking_pool
from smtpproto_adapters._blocking_pool import ThreadPool

from .clients import wait_until


def test_pool_reuses_an_idle_thread_and_close_ends_it() -> None:
    seen: list[threading.Thread] = []
    done = threading.Semaphore(0)

    def work(item: int) -> None:
        seen.append(threading.current_thread())
        done.release()

    pool: ThreadPool[int] = ThreadPool(work, "test-pool")
    for item in range(3):
        pool.submit(item)
        assert done.acquire(timeout=5)
        wait_until(lambda: pool._idle == 1)  # back to waiting before the next submit
    assert len(set(seen)) == 1
    pool.close()
    seen[0].join(5)
    assert not seen[0].is_alive()
    pool.submit(4)  # after close: a thread of its own, which then exits
    assert done.acquire(timeout=5)
    seen[-1].join(5)
    assert not seen[-1].is_alive()


def test_pool_runs_items_concurrently_and_idle_threads_time_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_blocking_pool, "IDLE_SECONDS", 0.1)
    monkeypatch.setattr(_blocking_pool, "MAX_IDLE", 2)
    release = threading.Event()
    started = threading.Semaphore(0)
    threads: set[threading.Thread] = set()

    def work(item: int) -> None:
        threads.add(threading.current_thread())
        started.release()
        release.wait(5)

    pool: ThreadPool[int] = ThreadPool(work, "test-pool")
    for item in range(4):
        pool.submit(item)
    for _ in range(4):
        assert started.acquire(timeout=5)  # none waits for another to finish
    assert len(threads) == 4
    release.set()
    # Two exit at once (MAX_IDLE), the other two after IDLE_SECONDS.
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    assert pool._idle == 0


def test_pool_threads_leave_signals_to_the_main_thread() -> None:
    masks: list[set[signal.Signals]] = []
    done = threading.Event()

    def work(_: int) -> None:
        masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        done.set()

    pool: ThreadPool[int] = ThreadPool(work, "test")
    pool.submit(1)
    assert done.wait(5)
    pool.close()
    assert {signal.SIGINT, signal.SIGTERM} <= masks[0]
    assert signal.SIGINT not in signal.pthread_sigmask(
        signal.SIG_BLOCK, []
    )  # this thread is untouched
