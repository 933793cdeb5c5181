"""Fuzzed MIDI into `leadline serve` through a real JACK port: it survives, stays bounded, plays valid MIDI.

The fuzzer (bench/soak.py, fixed seed) sends random bytes, truncated messages, huge and unterminated
SysEx, real-time bytes between notes, a note flood (>= 10,000 messages/s), clock ticks 0.1 ms apart then
1 s apart, and out-of-range values, while jack_midi_clock runs at 120 BPM and leadline plays in duet mode.
Afterwards: the daemon is alive and answers a clean phrase in respond mode, its peak RSS stayed bounded,
everything it sent is well-formed MIDI, every note-on has its note-off after Stop, and it exits 0 on
SIGTERM with its pitch bend centred and modulation 0 (the `bendy_model` fixture bends most notes).
Correctness only: JACK timing on a loaded machine is not asserted here.
"""
from __future__ import annotations

import pytest

from leadline.bench.jackrig import Beat, Player, bends, rig_wait, stuck_bend, stuck_notes, through_rig
from leadline.bench.soak import Fuzzer, Rig, bad_messages, clean_check, dropped, rss_kb

# (phase, seconds): ~15 s of fuzz; each phase once, the flood for 3 s right after the out-of-range values
# (its note-offs release the notes that came with bad data bytes)
ORDER = [("junk", 1.5), ("truncated", 1.0), ("sysex", 1.5), ("realtime", 1.5), ("range", 1.5),
         ("flood", 3.0), ("clock_fast", 1.0), ("clock_slow", 2.5), ("junk", 1.0)]
RSS_GROWTH_MB = 64  # peak RSS may exceed the RSS right after start-up by at most this


def test_fuzz_through_a_real_port(jack, bendy_model, tmp_path, capsys):
    rig = Rig(bendy_model.path, tmp_path / "daemon.log", jack, "mode=duet", prefix="fuzz")
    try:
        beat = Beat(rig.lis, probe=lambda: through_rig(jack, rig.lis, rig.player))
        beat.wait(lambda: any(len(m) == 3 and m[0] == 0x90 for _, m in rig.lis.events), 15, "duet notes")
        fz = Fuzzer(rig.player, seed=7)
        fz.run(0, ORDER)
        assert rig.daemon.proc.poll() is None, f"the daemon died during the fuzz:\n{rig.log.read_text()[-3000:]}"
        answer = clean_check(rig.lis, rig.player, jack)
        rss = rss_kb(rig.daemon.proc.pid)
        assert rig.daemon.terminate() == 0
        Beat(rig.lis).wait(lambda: not stuck_notes(rig.lis.events), 3, "note-offs after SIGTERM")
        n_dropped = dropped(rig.log.read_text())
        bad = bad_messages(rig.lis.raw)
        with capsys.disabled():
            print(f"\nfuzz: sent {fz.sent}, refused by the sender {fz.refused}, dropped by the daemon {n_dropped}, "
                  f"rates {({k: round(v) for k, v in fz.rates.items()})}, RSS {rig.rss0 / 1024:.1f} MB at start, "
                  f"peak {rss['VmHWM'] / 1024:.1f} MB, answer {answer} notes, "
                  f"{len(rig.lis.raw)} messages heard")
        assert fz.rates["flood"] >= 10_000, f"the flood reached only {fz.rates['flood']:.0f} messages/s"
        assert fz.refused > 0, "nothing was refused: the fuzz never tried what python-rtmidi cannot send"
        assert not bad, f"malformed MIDI from leadline: {bad[:5]}"
        assert rig.lis.proc.poll() is None, "jack_midi_dump died (it aborts on malformed messages)"
        grew = (rss["VmHWM"] - rig.rss0) / 1024
        assert grew < RSS_GROWTH_MB, f"peak RSS grew by {grew:.0f} MB"
        assert n_dropped is not None, "no status line with the drop counter in the daemon's log"
        assert not stuck_notes(rig.lis.events)
        events = list(rig.lis.events)
        assert any(v for _, v in bends(events)), "leadline bent no note in the fuzz"
        assert stuck_bend(events) == (0, 0), f"pitch bend, modulation left at {stuck_bend(events)}"
    except BaseException:
        (tmp_path / "listener.txt").write_text("".join(rig.lis.raw))  # for the post-mortem, with daemon.log
        raise
    finally:
        rig.close()


@pytest.mark.xfail(strict=True, raises=AssertionError,
                   reason="RtMidi's JACK input (python-rtmidi 1.5.8): an unterminated SysEx swallows what follows")
def test_unterminated_sysex_leaves_the_jack_input_deaf(jack):
    """Known limitation, pinned down (strict xfail: XPASS fails, so an update that fixes it says so).

    RtMidi's JACK input takes every event after a SysEx that does not end in 0xF7 as its continuation
    and swallows it (clock, Start, notes, CCs) until an event ends in 0xF7; leadline cannot see or undo
    that from Python. Same input settings as the daemon's MidiIO: the path without leadline's own JACK
    client, which is not deafened (tests/jack/test_native.py). A SysEx that ends in 0xF7 ends the
    swallowing: the marker note after it shows the rig delivers (else: a rig skip, not an xfail).
    """
    import time

    import rtmidi

    got = []
    player = Player(jack, name="sysex-player")
    mi = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="sysex-in")
    try:
        mi.ignore_types(sysex=True, timing=False, active_sense=True)
        mi.set_callback(lambda event, _data=None: got.append(event[0]))
        mi.open_virtual_port("in")
        jack.wait_port("sysex-in:in")
        jack.connect(player.port, "sysex-in:in")
        player.send([0xF0, 0x7D, 0x01])  # no 0xF7
        sent = ([0xF8], [0xFA], [0x90, 60, 100], [0x80, 60, 0])
        for msg in sent:
            player.send(msg)
        player.send([0xF0, 0x7D, 0x02, 0xF7])  # a whole SysEx: ends the continuation
        player.send([0x90, 61, 100])  # the marker
        rig_wait(lambda: [0x90, 61, 100] in got, 5, "the marker after a terminated SysEx")
        assert [m for m in got if m != [0x90, 61, 100]] == list(sent), f"heard {got}"
    finally:
        mi.cancel_callback()
        time.sleep(0.01)
        mi.close_port()
        mi.delete()
        player.close()
