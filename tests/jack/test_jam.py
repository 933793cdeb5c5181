"""Duet and trade keep playing while the player plays; respond answers after a lost note-off (issue 19).

Through real JACK ports: jack_midi_clock drives the song, a test player plays on the clock's ticks as the
independent listener hears them, and leadline's notes are placed in the song from their frames at that
listener. Every verdict goes through the rig's heartbeat (leadline.bench.jackrig.Beat). leadline's late-note
counters are printed, not asserted: a timing target belongs to the benchmark (on this VM the dummy graph
misses cycles every few seconds, and a note due in a missed cycle is late whatever leadline does); the
in-process tests (tests/daemon/test_jam_modes.py) assert 0 late notes on a fake clock.
"""
from __future__ import annotations

import re

from leadline.bench.jackrig import RATE, rig_wait

BAR = 96
CH = 1  # the player's channel (0-based); leadline plays on 0


class Song:
    """The song position as the listener hears jack_midi_clock: wait for tick k, place a frame in ticks."""

    def __init__(self, lis, bpm: float) -> None:
        self.lis, self.per_tick = lis, RATE * 60 / (bpm * 24)
        self.first = rig_wait(lambda: lis.ticks()[:1], 10, "the first clock tick at the listener")[0]

    def at(self, k: int) -> None:
        """Return once tick k (0 = the first) has reached the listener."""
        rig_wait(lambda: len(self.lis.ticks()) > k, 10 + k * self.per_tick / RATE, f"clock tick {k}")

    def tick_of(self, frame: int) -> int:
        return round((frame - self.first) / self.per_tick)  # (robust to a tick message lost on the way)

    def leadline_ticks(self) -> list[int]:
        return [self.tick_of(f) for f, m in self.lis.notes() if m[0] == 0x90 and m[2] > 0]


def play(song: Song, player, notes) -> None:
    """The player's notes, (onset tick, end tick, pitch), each sent when its tick reaches the listener."""
    events = sorted([(on, 1, [0x90 | CH, p, 100]) for on, _, p in notes] +
                    [(off, 0, [0x80 | CH, p, 0]) for _, off, p in notes])
    for tick, _, msg in events:
        song.at(tick)
        player.send(msg)


def report_late(parts, capsys) -> None:
    """leadline's own late-note counters from its last status line, printed."""
    text = parts.daemon.log_path.read_text()
    line = [ln for ln in text.splitlines() if "leadline stopped:" in ln][-1]
    counts = re.findall(r"(?:jack )?late \d+", line)
    with capsys.disabled():
        print(f"\n{', '.join(counts)} (leadline's counters)")


def test_duet_plays_in_every_bar_while_the_player_plays_in_bars_2_4_and_6(rig, capsys):
    parts = rig(160.0, "mode=duet")
    lis, player = parts.lis, parts.player
    beat = parts.beat()
    parts.clock.start()
    song = Song(lis, 160.0)
    phrase = [(bar * BAR + 12 * i, bar * BAR + 12 * i + 14, p)
              for bar in (1, 3, 5) for i, p in enumerate((64, 67, 69, 71, 72, 71, 69, 67))]
    play(song, player, phrase)
    song.at(8 * BAR + 2)
    per_bar = [sum(1 for t in song.leadline_ticks() if b * BAR <= t < (b + 1) * BAR) for b in range(8)]
    beat.check(all(per_bar), f"duet fell silent: leadline's note-ons per bar {per_bar}", exact=False)
    assert parts.daemon.terminate() == 0
    report_late(parts, capsys)


def test_trade_fills_its_turns_when_the_player_ends_legato(rig, capsys):
    """1-bar turns; the player's last note ends in the last beat of its turn or a few ticks into
    leadline's: every one of leadline's turns still has notes after its second beat."""
    parts = rig(120.0, "mode=trade", "trade.bars=1")
    lis, player = parts.lis, parts.player
    beat = parts.beat()
    parts.clock.start()
    song = Song(lis, 120.0)
    phrase = []
    for turn, last_end in zip((0, 2, 4, 6), (88, 95, 100, 104)):
        t = turn * BAR
        phrase += [(t + 2, t + 22, 64), (t + 24, t + 44, 67), (t + 48, t + 68, 69), (t + 72, t + last_end, 71)]
    play(song, player, phrase)
    song.at(8 * BAR + 2)
    ticks = song.leadline_ticks()
    cut = {turn: [t - turn * BAR for t in ticks if turn * BAR <= t < (turn + 1) * BAR] for turn in (1, 3, 5, 7)}
    cut = {turn: mine for turn, mine in cut.items() if not any(t >= 48 for t in mine)}
    beat.check(not cut, f"leadline's turns cut short (turn: its onsets, ticks into the bar): {cut}",
               exact=False)
    wrong = [t for t in ticks if (t // BAR) % 2 == 0]
    beat.check(not wrong, f"notes at ticks {wrong} fall in the player's bars")
    assert parts.daemon.terminate() == 0
    report_late(parts, capsys)


def test_respond_answers_when_all_notes_off_came_instead_of_a_note_off(rig):
    """The player holds a note and its note-off is lost: All Notes Off (CC 123) comes in its place.
    The next phrase is answered."""
    parts = rig(120.0, "respond.after_beats=1", "respond.bars=1")
    lis, player = parts.lis, parts.player
    beat = parts.beat()
    parts.clock.start()
    song = Song(lis, 120.0)
    song.at(12)
    player.send([0x90 | CH, 52, 100])
    song.at(30)
    player.send([0xB0 | CH, 123, 0])  # in place of 52's note-off
    play(song, player, [(BAR + 12 * i, BAR + 12 * i + 10, p) for i, p in enumerate((64, 67, 69, 71))])
    beat.wait(lambda: song.leadline_ticks(), 10, "an answer to the phrase after the lost note-off")
