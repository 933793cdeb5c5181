"""MIDI learn: a moved control becomes temperature / mode / on-off / panic at once and is kept in the config
file with its comments (the shipped config.yaml, edited in a copy); the live part runs in-process
(bench/liverig.py: the daemon's Live at synthetic times, the shipped model)."""
from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from leadline.bench.liverig import Rig
from leadline.daemon import config, configfile
from leadline.daemon.learn import Learn

REPO = Path(__file__).resolve().parents[2]
S = 1_000_000_000


def test_learn_cc_maps_each_target_in_turn_at_once(engine, monkeypatch, caplog):
    rig = Rig(engine, monkeypatch, 1, "control.learn_cc=30")
    live, saved = rig.live, []
    live.on_learned = saved.append
    rig.feed([0xB0, 30, 127])  # learn starts: temperature first
    assert live.learn is not None and "temperature" in caplog.text
    rig.feed([0xB0, 30, 0])  # the learn button's release skips nothing
    rig.feed([0xB0, 123, 0])  # a DAW's All Notes Off is not a control to learn
    rig.feed([0xB0, 40, 10])  # a knob: temperature
    rig.feed([0xB0, 40, 127])  # still turning: in use as temperature, not taken for mode
    assert live.cfg.control.temperature_cc == 40 and live.cfg.control.mode_cc == 22
    assert abs(live.sampler.temperature - 2.0) < 1e-9, "the learned knob works at once"
    rig.feed([0xB0, 30, 127])  # mode skipped with the learn button
    assert live.cfg.control.mode_cc == 22
    rig.feed([0xB0, 21, 127])  # on/off: CC 21 (temperature's before it learned CC 40)
    assert live.cfg.control.enable_cc == 21 and live.cfg.control.temperature_cc == 40
    rig.pass_(11 * S)  # panic: nothing moved within control.learn_timeout_s
    assert "nothing moved for panic_cc" in caplog.text
    rig.feed([0xB0, 42, 32])  # expression depth: a knob
    rig.feed([0xB0, 42, 64])  # still turning
    rig.pass_()
    assert live.learn is None and live.cfg.control.expression_cc == 42
    assert live.bender.depth == 64 / 127, "the learned depth knob works at once"
    assert [(c.temperature_cc, c.mode_cc, c.enable_cc, c.panic_cc, c.expression_cc) for c in saved] == [
        (40, 22, 23, 24, 27), (40, 22, 21, 24, 27), (40, 22, 21, 24, 42)]
    rig.feed([0xB0, 21, 0])
    assert not live.enabled, "CC 21 is on/off now"


def test_a_cc_learned_for_one_target_leaves_the_other():
    c = config.ControlConfig()
    new = Learn(5.0, 0).feed(22, 64, 0, c)  # temperature <- CC 22, which was mode's
    assert (new.temperature_cc, new.mode_cc) == (22, None)


def test_saving_keeps_every_comment_and_line_but_the_values(tmp_path):
    path = tmp_path / "config.yaml"
    shutil.copyfile(REPO / "config.yaml", path)
    os.chmod(path, 0o600)
    before = path.read_text()
    configfile.set_values(path, "control", {"temperature_cc": 40, "mode_cc": None, "enable_cc": 23,
                                            "panic_cc": 24, "learn_cc": 100})
    after = path.read_text()
    changed = [d[0] + d[2:] for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]
    assert changed == [
        "-  temperature_cc: 21     # CC number: value 0..127 -> temperature 0.2..2.0 (null = off)",
        "+  temperature_cc: 40     # CC number: value 0..127 -> temperature 0.2..2.0 (null = off)",
        "-  mode_cc: 22            # CC number: 0-42 respond, 43-85 trade, 86-127 duet",
        "+  mode_cc: null          # CC number: 0-42 respond, 43-85 trade, 86-127 duet",
        "-  learn_cc: null         # CC number: value > 0 starts MIDI learn live (as `serve --learn`); during learn, skips",
        "+  learn_cc: 100          # CC number: value > 0 starts MIDI learn live (as `serve --learn`); during learn, skips",
    ]
    cfg = config.load(path)
    assert (cfg.control.temperature_cc, cfg.control.mode_cc, cfg.control.learn_cc) == (40, None, 100)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600), "the file keeps its mode"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"], "no temporary file left"


def test_saving_adds_a_missing_key_or_section_and_refuses_an_inline_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# mine\nmode: duet  # keep\ncontrol:\n    channel: 2   # pads\n\n# --- end\n")
    configfile.set_values(path, "control", {"panic_cc": 50})
    assert path.read_text() == "# mine\nmode: duet  # keep\ncontrol:\n    channel: 2   # pads\n    panic_cc: 50\n\n# --- end\n"
    path.write_text("mode: duet\n")
    configfile.set_values(path, "control", {"panic_cc": 50})
    assert yaml.safe_load(path.read_text()) == {"mode": "duet", "control": {"panic_cc": 50}}
    path.write_text("control: {channel: 2}\n")
    with pytest.raises(config.ConfigError, match="control: is written inline"):
        configfile.set_values(path, "control", {"panic_cc": 50})
    assert path.read_text() == "control: {channel: 2}\n"
