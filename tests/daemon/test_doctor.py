"""`leadline doctor`: one ok/warn/FIX line a check, FIX lines that name what to fix, exit 1 when any."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from leadline.bench.jackrig import JackServer
from leadline.daemon.cli import main

LEVELS = ("ok", "warn", "FIX")


@pytest.fixture(scope="module")
def jack_server():
    """A private JACK server (dummy driver), so a MIDI backend is usable whatever the machine has."""
    saved = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
    server = JackServer(name=f"leadline-doctor-{os.getpid()}").start()  # sets the two variables
    yield server
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _doctor(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = main(["doctor", *argv])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("doctor: ")
    for line in lines[:-1]:
        assert line.split()[0] in LEVELS, line
    return rc, lines[:-1]


def _fixes(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FIX")]


def test_healthy_machine_exits_0(tiny_model, jack_server, capsys):
    rc, lines = _doctor(capsys, "--model", str(tiny_model.path))
    assert rc == 0, "\n".join(lines)
    assert not _fixes(lines)
    assert any(line.startswith(f"ok    model: {tiny_model.path}: 2 x 32 LSTM") for line in lines), lines
    assert any(line.startswith("ok    MIDI backend: ") for line in lines), lines
    assert any(line.startswith("ok    engine: ") for line in lines), lines
    cuda = [line for line in lines if line.split()[1] == "CUDA:"]
    assert len(cuda) == 1
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "CUDA: not available (onnxruntime without CUDA provider)" in cuda[0]


@pytest.mark.parametrize("broken", ["model.onnx", "card.json"])
def test_broken_model_is_a_fix_naming_the_file(tiny_model, jack_server, tmp_path, capsys, broken):
    model = Path(shutil.copytree(tiny_model.path, tmp_path / "model"))
    if broken == "model.onnx":
        (model / broken).unlink()
    else:
        (model / broken).write_text("{not json")
    rc, lines = _doctor(capsys, "--model", str(model))
    assert rc == 1
    assert [line.split(":")[0] for line in _fixes(lines)] == ["FIX   model"], lines
    assert str(model / broken) in _fixes(lines)[0]


def test_bad_config_value_is_a_fix_naming_the_key(tiny_model, jack_server, capsys):
    rc, lines = _doctor(capsys, "--model", str(tiny_model.path), "--set", "clock.bpm=1000")
    assert rc == 1
    fixes = _fixes(lines)
    assert len(fixes) == 1 and fixes[0].startswith("FIX   config: clock.bpm: 1000"), lines
    assert any(line.startswith("ok    model: ") for line in lines), "the other checks still run"


def test_unknown_key_in_config_file_names_key_and_file(tiny_model, jack_server, tmp_path, capsys):
    cfg = tmp_path / "studio.yaml"
    cfg.write_text("midi:\n  out_chanel: 2\n")
    rc, lines = _doctor(capsys, "--config", str(cfg), "--model", str(tiny_model.path))
    assert rc == 1
    (fix,) = _fixes(lines)
    assert "midi.out_chanel" in fix and str(cfg) in fix


@pytest.mark.skipif(Path("/dev/snd/seq").exists(), reason="this machine has an ALSA sequencer")
def test_no_midi_backend_is_a_fix(tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"leadline-nobody-{os.getpid()}")
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    rc, lines = _doctor(capsys, "--model", str(tiny_model.path))
    assert rc == 1
    assert [line.split(":")[0] for line in _fixes(lines)] == ["FIX   MIDI backend"], lines
    assert any(line.startswith("warn  MIDI jack: no JACK server") for line in lines)


def test_connect_to_a_missing_port_is_a_fix(tiny_model, jack_server, capsys):
    rc, lines = _doctor(capsys, "--model", str(tiny_model.path), "--set", "midi.connect_out=no-such-synth")
    assert rc == 1
    (fix,) = _fixes(lines)
    assert fix.startswith("FIX   midi.connect_out: 'no-such-synth': no such output port"), lines
