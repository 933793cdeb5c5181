"""leadline's own JACK client (daemon/jacknative.py, daemon/jackmidi.c) on the private JACK server.

Two clients of it: one sends, the other listens; both stamp in JACK frames, so what is checked is exact
(frames, not milliseconds) and independent of how late Python runs, as long as a message is queued a
few cycles ahead. Both are leadline's code, so the rig's heartbeat is separate: jack_midi_clock beating
for a jack_midi_dump listener (leadline.bench.jackrig.Beat); an exact check that fails is a rig skip only when
those ticks show that the dummy graph missed cycles meanwhile.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from leadline.bench.jackrig import Beat, Clock, Listener, rig_wait, wait_for
from leadline.daemon import jacknative


@pytest.fixture
def heart(jack):
    """jack_midi_clock beating for a listener of its own: the rig's heartbeat, independent of leadline."""
    clock = Clock(jack, 120.0)
    lis = None
    try:
        lis = Listener(jack, "native-heart")
        lis.listen_to(Clock.PORT)
        clock.start()
        rig_wait(lambda: len(lis.ticks()) > 2, 10, "clock ticks at the heartbeat listener")
        yield lis
    finally:
        for part in (lis, clock):
            if part is not None:
                part.close()


@pytest.fixture
def pair(jack, heart):
    a = jacknative.JackMidi("native-a", "in", "out")
    b = jacknative.JackMidi("native-b", "in", "out")
    heard: list[tuple[int, list[int]]] = []
    b.start_reader(lambda t, m: heard.append((b.to_frame(t), m)))
    assert a.connect(a.out_name, b.in_name)
    yield a, b, heard, Beat(heart)
    a.close()
    b.close()


def test_timed_notes_land_on_their_exact_frames(pair):
    a, b, heard, beat = pair
    first = a.to_frame(a.now_ns()) + 48_000 // 5  # 200 ms ahead
    frames = [first + k * 750 + k % 7 for k in range(12)]  # off the cycle grid on purpose
    for k, f in enumerate(frames):
        assert a.send_at(a.to_ns(f), [0x90, 60 + k, 100])
    beat.wait(lambda: len(heard) >= 12, 5, "the notes at the listening client")
    beat.check([f for f, _ in heard] == frames, f"frames {[f for f, _ in heard]}, due {frames}")
    assert [m[1] for _, m in heard] == [60 + k for k in range(12)]
    beat.check(a.stats()["late_out"] == 0, f"{a.stats()['late_out']} notes written after their frame")


def test_flush_drops_queued_note_ons_and_bends_but_not_their_note_offs(pair):
    a, b, heard, beat = pair
    now = a.to_frame(a.now_ns())
    a.send_at(a.to_ns(now + 9_600), [0x90, 62, 100])  # 200 ms ahead: still queued at the flush
    a.send_at(a.to_ns(now + 10_000), [0xE0, 0, 96])  # its bend (a cut note's later point: dropped too)
    a.send_at(a.to_ns(now + 12_000), [0x80, 61, 0])  # a note-off queued behind it
    a.flush()
    a.send([0xB0, 123, 0])
    a.send([0xE0, 0, 64])  # the stop path's centre
    beat.wait(lambda: len(heard) >= 3, 5, "the note-off, All Notes Off and the centre")
    time.sleep(0.3)  # past the note-on's frame
    assert [m for _, m in heard] == [[0x80, 61, 0], [0xB0, 123, 0], [0xE0, 0, 64]]


def test_untimed_messages_do_not_wait_behind_timed_ones(pair):
    a, b, heard, beat = pair
    now = a.to_frame(a.now_ns())
    a.send_at(a.to_ns(now + 24_000), [0x90, 64, 100])  # half a second ahead
    a.send([0x91, 50, 90])
    beat.wait(lambda: heard, 5, "the untimed note")
    assert heard[0][1] == [0x91, 50, 90]
    beat.check(heard[0][0] - now < 24_000 // 4, f"the untimed note came {heard[0][0] - now} frames later")
    beat.wait(lambda: len(heard) >= 2, 5, "the timed note")
    assert heard[1][1] == [0x90, 64, 100]
    beat.check(heard[1][0] == now + 24_000, f"the timed note at frame {heard[1][0]}, due {now + 24_000}")


def test_a_time_already_past_goes_at_the_next_cycle_start(pair):
    a, b, heard, beat = pair
    a.send_at(a.now_ns() - 50_000_000, [0x90, 65, 100])  # 50 ms ago
    beat.wait(lambda: heard, 5, "the late note")
    assert heard[0][1] == [0x90, 65, 100] and a.stats()["late_out"] == 1


def test_no_compiler_is_said_and_nothing_is_left_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("LEADLINE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setattr(jacknative.shutil, "which", lambda name: None)
    with pytest.raises(jacknative.NativeUnavailable, match="no C compiler"):
        jacknative.build()
    assert not any(tmp_path.rglob("*.so"))


def test_an_unwritable_cache_builds_in_the_temporary_folder(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("LEADLINE_CACHE", str(blocker))
    monkeypatch.setattr(jacknative.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out = jacknative.build()
    assert out.parent == tmp_path / "tmp" / f"leadline-{os.getuid()}" and out.stat().st_size > 0
    assert jacknative.build() == out  # found, not built again


def test_a_failed_build_names_the_missing_headers(monkeypatch, tmp_path):
    monkeypatch.setenv("LEADLINE_CACHE", str(tmp_path))
    bad = tmp_path / "broken.c"
    bad.write_text("#include <no/such/header.h>\n")
    monkeypatch.setattr(jacknative, "SOURCE", bad)
    with pytest.raises(jacknative.NativeUnavailable, match="cannot build broken.c"):
        jacknative.build()
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["broken.c"]


def test_bench_quick_jack_section_runs_and_reports(tiny_model, tmp_path):
    """`leadline bench --quick --only jack` (its own private server) runs in the suite so it never rots;
    its numbers are reported by the full bench, not asserted here."""
    import json

    from leadline.daemon.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_model.path), "--json", str(out), "--quick", "--only", "jack"]) == 0
    jack = json.loads(out.read_text())["sections"]["jack"]
    onset = jack["onset_error"]
    assert onset["leadline"]["n"] >= 10 and "abs_p99_ms" in onset["leadline"], onset
    assert "n" in onset["leadline_python_rtmidi"] and "n" in onset["reference_sleeping_client"], onset
    tempo = jack["tempo_change"]  # (or an "error" when the rig showed no change: reported, not judged)
    assert "error" in tempo or tempo["input"].startswith("leadline's own JACK client"), tempo
    assert isinstance(jack["late_jack_cycles"], dict) and jack["respond_reaction"]["n"] == 1


def test_the_daemon_ends_with_an_error_when_the_jack_server_goes(tiny_model, tmp_path):
    """jackd stops under a running daemon: leadline says so in one line and exits with an error,
    instead of running on with a dead client and a frozen clock."""
    import os

    from leadline.bench.jackrig import Daemon, JackServer

    server = JackServer(f"leadline-gone-{os.getpid()}").start()
    log = tmp_path / "daemon.log"
    try:
        daemon = Daemon(server, tiny_model.path, "mode=duet", log=log)
    except BaseException:
        server.stop()
        raise
    try:
        time.sleep(0.5)
        server.proc.terminate()  # (not SIGKILL: a killed jackd keeps its entry among JACK's 8 servers)
        server.proc.wait(15)
        code = daemon.proc.wait(15)
        text = log.read_text()
        assert code != 0 and "the JACK server shut leadline's client down" in text, text[-2000:]
        assert "Traceback" not in text, text[-2000:]
    finally:
        daemon.close()
        server.stop()
        for f in Path("/dev/shm").glob(f"jack_sem.*_{server.name}_*"):  # the client's, left by its dead server
            f.unlink(missing_ok=True)


def test_an_unterminated_sysex_does_not_deafen_leadlines_own_client(jack):
    """What swallows python-rtmidi's JACK input (tests/jack/test_fuzz.py, the strict xfail) is one
    event here, dropped; everything after it arrives."""
    from leadline.bench.jackrig import Player

    got: list[list[int]] = []
    player = Player(jack, name="sysex-player-native")
    jm = jacknative.JackMidi("sysex-native", "in", "out")
    try:
        jm.start_reader(lambda t, m: got.append(m))
        assert jm.connect(player.port, jm.in_name)
        player.send([0xF0, 0x7D, 0x01])  # no 0xF7
        sent = ([0xF8], [0xFA], [0x90, 60, 100], [0x80, 60, 0])
        for msg in sent:
            player.send(msg)
        try:
            wait_for(lambda: len(got) >= 4, 5, "the messages after the unterminated SysEx")
        except TimeoutError:  # leadline deaf, unless the python-rtmidi test player delivers nothing at all
            player.send([0x90, 61, 100])
            rig_wait(lambda: [0x90, 61, 100] in got, 3, "a marker from the test player")
            raise
        assert got == list(sent)
    finally:
        jm.close()
        player.close()


def test_a_closed_client_is_inert(jack):
    """After close (e.g. the status line printed on the way out): counters keep their last values, sends
    do nothing; none of it reaches the freed C object (that was a segfault at exit)."""
    jm = jacknative.JackMidi("native-closed", "in", "out")
    jm.close()
    jm.close()
    assert jm.stats() == {"dropped_in": 0, "late_out": 0, "dropped_out": 0}
    assert not jm.send([0x90, 60, 100]) and not jm.send_at(0, [0x80, 60, 0]) and not jm.alive
    jm.flush()
