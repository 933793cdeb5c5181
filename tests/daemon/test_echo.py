"""Echo suppression and the maximum note length, in-process (bench/liverig.py: the daemon's Live at synthetic
times with the shipped model): leadline's own messages coming back on its input are not the player's."""
from __future__ import annotations

from leadline.bench.liverig import BAR, Rig, player_notes
from leadline.daemon.codec import TICKS_PER_BEAT
from leadline.daemon.echo import EchoGuard, slot

MS = 1_000_000


def test_an_echo_is_the_same_kind_channel_and_number_within_the_window():
    g = EchoGuard(30.0)
    g.sent(1000 * MS, (0x90, 64, 100))
    g.sent(1000 * MS, (0xB0, 123, 0))
    assert g.echo(1001 * MS, [0x90, 64, 90])  # velocity does not matter
    assert g.echo(1029 * MS, [0xB0, 123, 0])
    assert not g.echo(1031 * MS, [0x90, 64, 100]), "past the window"
    assert not g.echo(1001 * MS, [0x91, 64, 100]), "another channel"
    assert not g.echo(1001 * MS, [0x90, 65, 100]), "another pitch"
    assert not g.echo(1001 * MS, [0x80, 64, 0]), "a note-off is not the echo of a note-on"
    assert not g.echo(990 * MS, [0x90, 64, 100]), "before it was sent"
    assert g.echoes == 2
    assert slot([0x90, 64, 0]) == slot([0x80, 64, 0]), "a note-on of velocity 0 is a note-off"
    assert slot([0xC0, 5]) == -1 and slot([0x90]) == -1


def test_clock_echoes_have_a_short_window_so_an_external_clock_still_comes_through():
    g = EchoGuard(30.0)
    g.sent(1000 * MS, [0xF8])
    assert g.echo(1002 * MS, [0xF8])
    assert not g.echo(1010 * MS, [0xF8]), "a tick 10 ms after leadline's own is another clock's"


def test_window_0_is_off():
    g = EchoGuard(0.0)
    g.sent(1000 * MS, (0x90, 64, 100))
    assert not g.echo(1000 * MS, [0x90, 64, 100]) and g.echoes == 0


def _looped(rig: Rig, delay_ns: int):
    """Loop leadline's output back to its input `delay_ns` later, like a patch cable or a DAW's MIDI thru."""
    send = rig.live._send
    back = []

    def loop(msg):
        send(msg)
        back.append((rig.fake.t + delay_ns, list(msg)))

    rig.live.send = loop
    return back


def test_looped_back_notes_are_not_answered(engine, monkeypatch):
    """respond with its output looped back: every answer note comes back 2 ms later. With the guard, they are
    counted as echoes and leadline answers the player's phrase once, as without a loop; unguarded (echo_ms 0)
    it takes its own answer for the player and answers that too."""
    answers = {}
    for echo_ms in (30.0, 0.0):
        rig = Rig(engine, monkeypatch, 1, "mode=respond", "respond.bars=1", f"midi.echo_ms={echo_ms}")
        back = _looped(rig, 2 * MS)
        rig.feed([0xFA])
        events = player_notes({}, [(BAR + 12 * i, BAR + 12 * i + 10, p) for i, p in enumerate((64, 67, 69, 71))])
        for k in range(7 * BAR):
            rig.song(1, {0: events.get(k, [])})
            due = [b for b in back if b[0] <= rig.fake.t]
            for t, msg in due:
                rig.live.handle(t, msg)
                back.remove((t, msg))
        answers[echo_ms] = (rig.live.stats.notes_in, rig.live.echo.echoes, rig.answers())
        rig.live.all_off()
    notes_in, echoes, out = answers[30.0]
    assert notes_in == 4 and out > 0, f"the player's 4 notes heard, an answer played: {answers[30.0]}"
    assert echoes >= out, "every note leadline played came back and was counted as an echo"
    assert answers[0.0][0] > 4, f"without the guard its own notes count as the player's: {answers[0.0]}"


def test_max_note_beats_cuts_leadlines_long_notes(engine, monkeypatch):
    """duet with a quarter-beat limit: no note of leadline's lasts longer; without it, some did."""
    longest = {}
    for limit in ("null", "0.25"):
        rig = Rig(engine, monkeypatch, 1, "mode=duet", f"midi.max_note_beats={limit}")
        rig.feed([0xFA])
        on, lengths = {}, []
        record = rig.live._send

        def watch(msg, record=record, on=on, lengths=lengths, rig=rig):
            record(msg)
            tick = rig.live.clock.tick_at(rig.fake.t)
            if msg[0] == 0x90 and msg[2]:
                on[msg[1]] = tick
            elif msg[0] in (0x80, 0x90) and msg[1] in on:
                lengths.append(tick - on.pop(msg[1]))

        rig.live.send = watch
        rig.song(4 * BAR, {})
        longest[limit] = max(lengths)
        rig.live.all_off()
    assert longest["0.25"] <= TICKS_PER_BEAT / 4 + 0.5, longest
    assert longest["null"] > TICKS_PER_BEAT / 4 + 0.5, f"no note was long enough to be cut: {longest}"
