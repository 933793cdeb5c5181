"""The input queue: bounded, counts drops, and a signal never hangs its timed wait."""
from leadline.daemon import ports


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


def test_a_full_queue_still_takes_transport_clock_and_note_offs_up_to_a_hard_bound():
    """After a flood fills the queue: Start, clock and a note-off still get in (a lost Start or Stop
    would leave leadline silent or playing on); note-ons and controllers do not; nothing beyond 4x."""
    q = ports.InputQueue(16)
    for _ in range(16):
        q.put(0, [0x90, 60, 100])
    for msg in ([0xFA], [0x90, 61, 100], [0xB0, 1, 2], [0xF8], [0x80, 60, 0], [0x90, 60, 0], [0xFC]):
        q.put(1, msg)
    got = [m for _, m in iter(lambda: q.get(0), None)][16:]
    assert got == [[0xFA], [0xF8], [0x80, 60, 0], [0x90, 60, 0], [0xFC]] and q.dropped == 2
    for _ in range(200):
        q.put(2, [0xF8])
    assert q.q.qsize() == 64 and q.dropped == 2 + 200 - 64
