"""Locks by name: one node's operations wait for each other, other nodes' do not."""
import threading
import time

import pytest

from bmi.locks import Busy, NamedLocks


def test_one_name_is_held_by_one_thread_at_a_time():
    locks, inside, most = NamedLocks(), [], []

    def work():
        with locks.hold("node:a"):
            inside.append(1)
            most.append(len(inside))
            time.sleep(0.01)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert max(most) == 1


def test_different_names_do_not_wait_for_each_other():
    locks, done = NamedLocks(), threading.Event()

    def hold_b():
        with locks.hold("node:b"):
            done.set()

    with locks.hold("node:a"):
        threading.Thread(target=hold_b).start()
        assert done.wait(5)


def test_several_names_in_any_order_do_not_deadlock_and_unused_locks_go():
    locks = NamedLocks()

    def work(names):
        for _ in range(200):
            with locks.hold(*names):
                pass

    threads = [threading.Thread(target=work, args=(names,)) for names in (["a", "b"], ["b", "a"], ["a"], ["b"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert locks._locks == {}


def test_a_lock_not_had_in_time_is_busy_and_holds_back_no_one():
    locks, had = NamedLocks(), threading.Event()
    with locks.hold("node:a"):
        started = time.monotonic()
        with pytest.raises(Busy, match="node:a"):
            with locks.hold("node:a", timeout=0.2):
                pass
        assert 0.2 <= time.monotonic() - started < 2
        with pytest.raises(Busy):   # nor shared
            with locks.hold(shared=["node:a"], timeout=0.1):
                pass

    with locks.hold(shared=["image:g"]):
        with pytest.raises(Busy):   # an owner that gave up waiting leaves the sharers free
            with locks.hold("image:g", timeout=0.1):
                pass

        def share():
            with locks.hold(shared=["image:g"], timeout=1):
                had.set()
        threading.Thread(target=share).start()
        assert had.wait(5)
    with locks.hold("node:a", "image:g", timeout=1):   # free again, and no lock is left behind
        pass
    assert locks._locks == {}
