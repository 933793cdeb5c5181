"""The input queue: arrival times from the backend's deltas, free of the callback's GIL wait; bounded."""
import numpy as np

from daemon import ports


def test_arrival_times_come_from_backend_deltas_not_the_callback_delay(monkeypatch):
    rng = np.random.default_rng(0)
    true = np.cumsum(np.full(500, 20_833_333)) + 10**12  # MIDI clock at 120 BPM, in ns
    delay = rng.exponential(600_000, 500).astype(np.int64)  # the callback waits for the GIL
    delay[::7] = 50_000  # ... but sometimes gets in at once
    q = ports.InputQueue(1000)
    now = iter(true + delay)
    monkeypatch.setattr(ports.time, "perf_counter_ns", lambda: int(next(now)))
    prev = true[0]
    for t in true:
        q.callback(([0xF8], (t - prev) / 1e9))
        prev = t
    stamps = np.array([q.get(0)[0] for _ in range(500)])
    err = stamps[20:] - true[20:]
    assert err.min() >= 0 and err.max() < 100_000  # within 0.1 ms of the truth: the quickest waits pin it
    assert np.abs(delay[20:] - 50_000).max() > 1_000_000  # (the raw callback times were off by > 1 ms)


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
