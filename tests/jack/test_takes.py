"""Through real JACK ports: leadline's notes end within midi.max_note_beats, its output looped back to its own
input is not answered, a recorded take (and its session log) holds exactly what the independent listener
(jack_midi_dump) heard, notes cut by Stop and by SIGTERM included, and MIDI learn maps the player's knobs at
once and keeps them in the config file (issue 17).

The `rig` fixture is in conftest.py; every check on leadline goes through the rig's heartbeat (Beat).
"""
from __future__ import annotations

import bisect
import re
import shutil
import time
from pathlib import Path

from leadline.bench.jackrig import PERIOD, RATE, Beat, Daemon, leadline_notes, rig_wait, stuck_notes, wait_for
from leadline.daemon import midifile, replay, session

SLACK = PERIOD + 10  # frames
REPO = Path(__file__).resolve().parents[2]


def notes_heard(events, channel: int = 0) -> list[tuple[int, int, int]]:
    """(onset frame, end frame, pitch) of leadline's notes at the listener; All Notes Off ends the rest."""
    on, out = {}, []
    for f, m in events:
        if len(m) < 3 or m[0] & 0x0F != channel:
            continue
        kind = m[0] & 0xF0
        if kind == 0x90 and m[2]:
            if m[1] in on:
                out.append((on.pop(m[1]), f, m[1]))
            on[m[1]] = f
        elif (kind == 0x80 or kind == 0x90) and m[1] in on:
            out.append((on.pop(m[1]), f, m[1]))
        elif kind == 0xB0 and m[1] == 123:
            out += [(t, f, p) for p, t in on.items()]
            on.clear()
    return sorted(out)


def ons(lis) -> int:
    return sum(1 for _, m in leadline_notes(lis.events) if m[0] == 0x90 and m[2])


def test_no_note_of_leadlines_outlasts_max_note_beats(rig):
    parts = rig(120.0, "mode=duet", "midi.max_note_beats=0.25")
    lis = parts.lis
    parts.clock.start()
    beat = parts.beat()
    beat.wait(lambda: ons(lis) >= 12, 30, "duet notes")
    parts.clock.stop()
    Beat(lis, parts.player, clock=False).wait(lambda: not stuck_notes(leadline_notes(lis.events)), 2,
                                              "every note-on's note-off after Stop")
    limit = RATE * 60 / 120 / 4  # a quarter of a beat at 120 BPM: 6000 frames
    lengths = [end - on for on, end, _ in notes_heard(lis.events)]
    beat.check(max(lengths) <= limit + SLACK, f"notes of {max(lengths)} frames (limit {limit:.0f}): {lengths}")
    beat.check(any(abs(n - limit) <= SLACK for n in lengths), f"no note was cut at the limit: {lengths}",
               exact=False)


def test_output_looped_back_to_its_input_is_not_answered(rig, jack):
    """leadline's output patched to its own input: it answers the player's phrase once, counts its own notes
    coming back as echoes, and does not answer its answer (unguarded, every answer note would interrupt the
    answer as the player's and be answered in turn)."""
    parts = rig(120.0, "respond.after_beats=1", "respond.bars=1")
    lis, player, clock = parts.lis, parts.player, parts.clock
    jack.connect(Daemon.OUT, Daemon.IN)
    clock.start()
    rig_wait(lambda: len(lis.ticks()) > 24, 10, "clock ticks at the listener")
    beat = parts.beat()
    for p in (64, 67, 69, 71):
        player.note(p, 100, channel=1)
        time.sleep(0.12)
        player.off(p, channel=1)
    beat.wait(lambda: ons(lis), 30, "an answer")
    first = min(f for f, m in leadline_notes(lis.events) if m[0] == 0x90 and m[2])
    bar = 4 * RATE * 60 // 120
    rig_wait(lambda: lis.ticks() and lis.ticks()[-1] > first + 5 * bar, 30, "five bars of clock after the answer")
    late = [f for f, m in leadline_notes(lis.events) if m[0] == 0x90 and m[2] and f > first + bar + SLACK]
    beat.check(not late, f"leadline played again {len(late)} times after its one-bar answer: it answered itself",
               exact=False)
    answer = ons(lis)
    beat.check(answer >= 2, f"the answer was cut after {answer} note(s): its own echo taken for the player",
               exact=False)
    assert parts.daemon.terminate() == 0
    status = re.findall(r"leadline stopped: .*", parts.daemon.log_tail(40))
    echoes = re.search(r" echo (\d+)", status[-1]) if status else None
    assert echoes and int(echoes.group(1)) >= answer, f"echoes not counted: {status}"


def _take(folder, n: int, timeout: float = 10.0):
    """The n-th take's .mid and .log (written by the daemon's writer thread), oldest first."""
    def done(ext):  # (not the temporary .leadline.* files being written)
        return sorted((p for p in folder.glob(f"leadline_*.{ext}")), key=lambda p: p.stat().st_mtime)

    wait_for(lambda: len(done("mid")) >= n and len(done("log")) >= n, timeout, f"take {n} and its log in record.dir")
    mids = done("mid")
    return mids[n - 1], mids[n - 1].with_suffix(".log")


def _matches_listener(beat, lis, mid, log, e0: int, e1: int) -> None:
    """The take's notes are the listener's between events e0 and e1: same pitches in order, each onset and
    end the same within a tick; the log's note-ons are the listener's, frame for frame (within a period)."""
    heard = notes_heard(lis.events[e0:e1])
    per_tick = RATE * 60 / (120 * 24)
    take = sorted((n.onset, n.end, n.pitch) for n in {t.name: t for t in midifile.read(mid).tracks}["leadline"].notes())
    beat.check([p for _, _, p in take] == [p for _, _, p in heard],
               f"take pitches {[p for *_, p in take]} != heard {[p for *_, p in heard]}", exact=False)
    origin = heard[0][0] - take[0][0] * per_tick  # frame of the take's tick 0, from its first note
    off = [(t, h) for t, h in zip(take, heard)
           if abs(origin + t[0] * per_tick - h[0]) > per_tick + SLACK or abs(origin + t[1] * per_tick - h[1]) > per_tick + SLACK]
    beat.check(not off, f"take notes off the heard ones by over a tick: {off[:4]}", exact=False)
    header, events = session.read(log)
    span = [e[1] for e in events if e[0] in "io"]
    steps = [e[1] for e in events if e[0] == "s"]
    assert steps and all(min(span) - 1e9 <= t <= max(span) + 1e9 for t in steps), "steps in the log's timebase"
    rate = int(re.search(r"at (\d+) Hz", header["timebase"]).group(1))
    logged = [(round(e[1] * rate / 1e9), e[3]) for e in events if e[0] == "o" and e[2] == 0x90 and e[4]]
    beat.check([p for _, p in logged] == [p for _, _, p in heard], "the log's note-ons are not the heard ones",
               exact=False)
    # each note-on against the clock tick nearest to it, on each side's own frame count (a missed cycle of the
    # dummy driver moves jack_midi_dump's count against leadline's by whole periods, ticks and notes alike)
    log_ticks = [round(e[1] * rate / 1e9) for e in events if e[0] == "i" and e[2] == 0xF8]
    lis_ticks = [f for f, m in lis.events[e0:e1] if m == b"\xf8"]
    far = [(a, b) for a, b in zip(_from_tick([f for f, _ in logged], log_ticks), _from_tick([f for f, _, _ in heard],
                                                                                           lis_ticks))
           if abs(a - b) > SLACK]
    beat.check(not far, f"note-ons logged and heard at other places against the clock (frames): {far[:4]}")


def _from_tick(frames: list[int], ticks: list[int]) -> list[int]:
    """Each frame's distance from the nearest of `ticks`."""
    out = []
    for f in frames:
        i = bisect.bisect_left(ticks, f)
        out.append(min((f - ticks[j] for j in (i - 1, i) if 0 <= j < len(ticks)), key=abs))
    return out


def test_a_take_holds_what_the_listener_heard_through_stop_and_sigterm(rig, tmp_path):
    takes = tmp_path / "takes"
    parts = rig(120.0, "mode=duet", f"record.dir={takes}")
    lis, clock = parts.lis, parts.clock
    clock.start()
    beat = parts.beat()
    beat.wait(lambda: ons(lis) >= 6, 30, "duet notes")
    clock.stop()  # mid-phrase: what was scheduled and not yet sent is cancelled
    mid1, log1 = _take(takes, 1)
    e1 = len(lis.events)
    parts.player.send([0xFA])  # (jack_midi_clock rolling again after a Stop sends Song Position 0, no Start)
    clock.start()
    beat.wait(lambda: ons(lis) >= 12, 30, "duet notes after Start")
    assert parts.daemon.terminate() == 0  # SIGTERM mid-phrase
    mid2, log2 = _take(takes, 2)
    e0 = next(i for i, (_, m) in enumerate(lis.events) if m == b"\xfa")  # (before it: the internal clock's
    _matches_listener(beat, lis, mid1, log1, e0, e1)  # first notes, which the Start ends unrecorded)
    _matches_listener(beat, lis, mid2, log2, e1, len(lis.events))
    r = replay.replay(log2)
    print(f"replay of the take after Start: {r['same']} of {r['logged']} notes the same, {r['replayed']} replayed")
    assert r["logged"] == len(notes_heard(lis.events[e1:]))


def test_midi_learn_maps_a_knob_at_once_and_keeps_it_in_the_config_file(rig, tmp_path):
    """`serve --learn --config FILE`: the player's CC 40 becomes temperature and CC 41 mode, each written into
    the file (a copy of the shipped config.yaml: every other line, comments included, unchanged); CC 41 at
    127 then switches leadline to duet at once, and it plays."""
    path = tmp_path / "config.yaml"
    shutil.copyfile(REPO / "config.yaml", path)
    before = path.read_text().splitlines()
    parts = rig(120.0, "control.learn_timeout_s=20", args=("--config", str(path), "--learn"))
    lis, player = parts.lis, parts.player
    parts.clock.start()
    rig_wait(lambda: len(lis.ticks()) > 12, 10, "clock ticks")
    beat = parts.beat()
    for cc in (40, 41):
        player.send([0xB1, cc, 0])  # (a knob: a few values as it turns)
        player.send([0xB1, cc, 1])
        key = {40: "temperature_cc", 41: "mode_cc"}[cc]
        beat.wait(lambda: f"  {key}: {cc} " in path.read_text(), 10, f"control.{key}: {cc} in the config file")
    after = path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(after) == len(before) and [b.split("#")[0].split() for _, b in changed] == [
        ["temperature_cc:", "40"], ["mode_cc:", "41"]], changed
    assert [a.split("#", 1)[1] for a, _ in changed] == [b.split("#", 1)[1] for _, b in changed], "comments kept"
    assert ons(lis) == 0, "respond: nothing to answer yet"
    player.send([0xB1, 41, 127])  # the learned mode knob: duet
    beat.wait(lambda: ons(lis) >= 2, 20, "duet notes after the learned mode control moved")
    assert parts.daemon.terminate() == 0
