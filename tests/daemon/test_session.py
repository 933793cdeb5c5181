"""Takes hold what left the output, and their session logs replay: in-process (bench/liverig.py, the shipped
model). Through real JACK ports: tests/jack/test_takes.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from leadline.bench.liverig import BAR, Rig, player_notes
from leadline.daemon import cli, config, midifile, replay, session
from leadline.daemon.codec import Note
from leadline.daemon.recording import Recorder

PHRASE = [(BAR + 12 * i, BAR + 12 * i + 10, p) for i, p in enumerate((64, 67, 69, 71))]


def test_a_take_holds_leadlines_notes_as_they_left():
    """Notes from the messages that left: a retrigger, a note cut by All Notes Off, a skipped (never sent)
    note has no place."""
    rec = Recorder("unused", out_channel=0)
    for t, tick, msg in ((0, 0, (0x90, 60, 90)), (1, 6, (0x90, 60, 80)), (2, 12, (0x80, 60, 0)),
                         (3, 12, (0x90, 62, 70)), (4, 13, (0x91, 50, 70)), (5, 20, (0xB0, 123, 0))):
        rec.out(t, tick, msg)
    assert rec.parts["leadline"] == [Note(0, 6, 60, 90), Note(6, 6, 60, 80), Note(12, 8, 62, 70)]


def _respond_take(engine, monkeypatch, folder: Path, seed: int) -> Rig:
    """A respond take recorded with its session log: Start, a phrase, its answer, an interrupt, Stop."""
    rig = Rig(engine, monkeypatch, seed, "mode=respond", "respond.bars=2", f"record.dir={folder}")
    live = rig.live
    live.recorder = Recorder(folder, {"seed": seed, "config": config.as_dict(rig.cfg)}, live.out_ch)
    rig.feed([0xFA])
    events = player_notes({}, PHRASE)
    events = player_notes(events, [(4 * BAR + 30, 4 * BAR + 40, 72)])  # the player comes back mid-answer
    rig.song(7 * BAR, events)
    rig.feed([0xFC])
    rig.pass_(10_000_000)
    live.recorder.close()
    return rig


def test_stop_writes_the_take_and_its_log_and_the_log_replays_exactly(engine, monkeypatch, tmp_path):
    rig = _respond_take(engine, monkeypatch, tmp_path, 3)
    mids, logs = sorted(tmp_path.glob("*.mid")), sorted(tmp_path.glob("*.log"))
    assert len(mids) == len(logs) == 1 and mids[0].stem == logs[0].stem, sorted(tmp_path.iterdir())
    sent = [m for m in rig.sent if m[0] == 0x90 and m[2]]
    take = {t.name: t.notes() for t in midifile.read(mids[0]).tracks}
    assert len(take["leadline"]) == len(sent) > 0, "the take holds each note-on that left, and no other"
    assert [n.pitch for n in take["leadline"]] == [m[1] for m in sent]
    assert [n.pitch for n in take["player"]] == [64, 67, 69, 71, 72]

    header, events = session.read(logs[0])
    assert header["seed"] == 3 and header["state"]["window"] is not None
    assert sum(e[0] == "o" for e in events) >= 2 * len(sent) and any(e[0] == "s" for e in events)
    r = replay.replay(logs[0])
    assert r["logged"] == len(sent) and r["same"] == r["logged"] == r["replayed"] and r["moved"] == 0, r


def test_a_cut_log_still_reads(tmp_path):
    path = tmp_path / "x.log"
    path.write_text('{"format": "%s", "seed": 1}\n["i", 5, 144, 60, 100]\n["o", 6, 14' % session.FORMAT)
    header, events = session.read(path)
    assert header["seed"] == 1 and events == [["i", 5, 144, 60, 100]]
    path.write_text("MThd")
    with pytest.raises(ValueError, match="not a leadline session log"):
        session.read(path)


def test_leadline_replay_says_what_it_reproduced_and_refuses_a_non_log(engine, monkeypatch, tmp_path, capsys):
    _respond_take(engine, monkeypatch, tmp_path, 5)
    log = next(tmp_path.glob("leadline_*.log"))
    monkeypatch.undo()
    assert cli.main(["replay", str(log)]) == 0
    out = capsys.readouterr().out
    n = re.search(r"(\d+) notes of leadline's logged, (\d+) replayed; the first (\d+) the same", out)
    assert n and n.group(1) == n.group(2) == n.group(3) != "0", out
    bad = tmp_path / "take.mid"
    bad.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0")
    assert cli.main(["replay", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a leadline session log" in err[0], err
