"""`leadline bench` section "jam": the jam modes with the model, in-process, over many seeds (issue 19's targets).

Each scenario runs `Live` in the in-process rig (bench/liverig.py: synthetic times, 120 BPM, the daemon's code
otherwise) and returns the rig; tests/daemon/test_jam_modes.py asserts on single seeds, the section counts:
- duet: 8 bars, the player playing bars 2, 4 and 6 (four legato notes each): bars without a leadline note;
- trade: 1-bar turns, the player's last note ending at tick 88, 95, 100 or 104 of its bar (the last beat of
  its turn, or a few ticks into leadline's): leadline turns with no onset past their second beat;
- respond: the player holds a note whose note-off is lost (All Notes Off comes instead), then plays a phrase:
  phrases answered;
- trade in 3/4 (song.meter), 1-bar turns: leadline notes in the player's bars, leadline turns without a note in
  their last beat;
and late notes (the scheduler's count) everywhere.
"""
from __future__ import annotations

from leadline.bench.liverig import BAR, PLAYER_CH, START, Patches, Rig, per_bar, player_notes
from leadline.bench.run import Bench, section

TRADE_ENDS = (88, 95, 100, 104)


def duet(engine, patch, seed: int) -> Rig:
    rig = Rig(engine, patch, seed, "mode=duet")
    events = {}
    for bar in (1, 3, 5):
        player_notes(events, [(bar * BAR + 12 * i, bar * BAR + 12 * i + 14, p) for i, p in enumerate((64, 67, 69, 71))])
    rig.feed([START])
    rig.song(8 * BAR, events)
    return rig


def trade(engine, patch, seed: int, last_end: int) -> Rig:
    rig = Rig(engine, patch, seed, "mode=trade", "trade.bars=1")
    events = {}
    for t in range(0, 8 * BAR, 2 * BAR):
        player_notes(events, [(t, t + 20, 64), (t + 24, t + 44, 67), (t + 48, t + 68, 69), (t + 72, t + last_end, 71)])
    rig.feed([START])
    rig.song(8 * BAR, events)
    return rig


def cut_turns(rig: Rig) -> dict[int, list[int]]:
    """leadline's turns (odd bars of 8) with no onset past their second beat: turn -> its onsets in the bar."""
    turns = {turn: [t - turn * BAR for t in rig.onsets if turn * BAR <= t < (turn + 1) * BAR] for turn in (1, 3, 5, 7)}
    return {turn: mine for turn, mine in turns.items() if not any(t >= BAR // 2 for t in mine)}


BAR34 = 72


def trade_3_4(engine, patch, seed: int) -> Rig:
    """Trade in 3/4 (song.meter), 1-bar turns, the player playing four notes in each of its bars (issue 17)."""
    rig = Rig(engine, patch, seed, "mode=trade", "trade.bars=1", "song.meter=3/4")
    events = {}
    for t in range(0, 8 * BAR34, 2 * BAR34):
        player_notes(events, [(t + 18 * i, t + 18 * i + 14, 64 + 3 * i) for i in range(4)])
    rig.feed([START])
    rig.song(8 * BAR34, events)
    return rig


def trade_3_4_counts(rig: Rig) -> tuple[int, int]:
    """(onsets in the player's 3/4 bars, leadline's turns with no onset in their last beat)."""
    wrong = sum(1 for t in rig.onsets if (t // BAR34) % 2 == 0)
    cut = sum(1 for turn in (1, 3, 5, 7) if not any(turn * BAR34 + 48 <= t < (turn + 1) * BAR34 for t in rig.onsets))
    return wrong, cut


PHRASE_BARS = (1, 4)  # respond_after_lost_note_off: the player's phrases, each ending 46 ticks into its bar


def respond_after_lost_note_off(engine, patch, seed: int, cc: int = 123) -> Rig:
    """A held note whose note-off never comes (CC `cc` instead), then phrases in bars 2 and 5."""
    rig = Rig(engine, patch, seed, "mode=respond", "respond.bars=1")
    events = {2: [[0x90 | PLAYER_CH, 52, 100]], 20: [[0xB0 | PLAYER_CH, cc, 0]]}
    for bar in PHRASE_BARS:
        player_notes(events, [(bar * BAR + 12 * i, bar * BAR + 12 * i + 10, p) for i, p in enumerate((64, 67, 69, 71))])
    rig.feed([START])
    rig.song(8 * BAR, events)
    return rig


def answered(rig: Rig) -> int:
    """Of the two phrases in `respond_after_lost_note_off`, how many leadline answered: a note of its own
    within two bars after the phrase's last note-off (an answer may rest after its first note)."""
    return sum(any(bar * BAR + 46 < t <= bar * BAR + 46 + 2 * BAR for t in rig.onsets) for bar in PHRASE_BARS)


@section("jam")
def bench_jam(b: Bench) -> dict:
    from leadline.daemon.engine import CpuEngine

    engine = CpuEngine(b.model, threads=1)
    engine.warm_up()
    seeds = range(3 if b.quick else 20)
    patch = Patches()
    try:
        duets = [duet(engine, patch, s) for s in seeds]
        trades = [trade(engine, patch, s, end) for s in seeds for end in TRADE_ENDS]
        responds = [respond_after_lost_note_off(engine, patch, s) for s in seeds]
        trades_3_4 = [trade_3_4_counts(trade_3_4(engine, patch, s)) for s in seeds]
    finally:
        patch.undo()
    notes = sorted(n for r in duets for n in per_bar(r.onsets, 8))
    return {"seeds": len(seeds),
            "duet": {"bars": 8 * len(duets), "silent_bars": sum(n == 0 for n in notes),
                     "notes_per_bar_p50": notes[len(notes) // 2], "late": sum(r.live.queue.late for r in duets)},
            "trade": {"turns": 4 * len(trades), "cut_turns": sum(len(cut_turns(r)) for r in trades),
                      "late": sum(r.live.queue.late for r in trades)},
            "respond_after_lost_note_off": {"phrases": 2 * len(responds),
                                            "answered": sum(answered(r) for r in responds)},
            "trade_3_4": {"turns": 4 * len(trades_3_4), "notes_in_player_bars": sum(w for w, _ in trades_3_4),
                          "turns_silent_in_last_beat": sum(c for _, c in trades_3_4)}}
