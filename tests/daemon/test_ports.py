"""The input queue: bounded, counts drops, and a signal never hangs its timed wait."""
from daemon import ports


def test_queue_is_bounded_and_counts_drops():
    q = ports.InputQueue(16)
    for _ in range(100):
        q.callback(([0x90, 60, 100], 0.0))
    assert q.received == 100 and q.dropped == 84
    assert sum(1 for _ in iter(lambda: q.get(0), None)) == 16


def test_a_signal_during_a_timed_wait_does_not_hang_it():
    """Ctrl-C while the loop waits: the wait still ends (SimpleQueue on 3.11 would block forever here)."""
    import signal
    import threading
    import time

    q = ports.InputQueue(16)
    handled = []

    def slow_handler(signum, frame):
        handled.append(signum)
        time.sleep(0.1)  # the handler outlives the wait's deadline

    old = signal.signal(signal.SIGUSR1, slow_handler)
    rescue = threading.Timer(3.0, lambda: q.q.put((0, [0xFC])))  # unblocks a hung wait, so the test fails
    rescue.start()
    try:
        threading.Timer(0.02, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)).start()
        t0 = time.monotonic()
        got = q.get(0.05)
        waited = time.monotonic() - t0
    finally:
        rescue.cancel()
        signal.signal(signal.SIGUSR1, old)
    assert handled and got is None and waited < 1.0
