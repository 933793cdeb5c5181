"""The wheel is a working leadline: built from this tree, installed into a fresh virtualenv and run from an
empty folder, without the clone on sys.path, it finds its bundled model, answers a DAW clip and serves.

Offline on purpose: the wheel is built by this environment's setuptools (no build isolation) from a copy of
the files it is made of, and installed without dependencies into a venv that borrows this environment's
site-packages (numpy, onnxruntime, ...) through a .pth line. A .pth line only adds a folder to sys.path; the
.pth files inside it (this checkout's editable install) are not run, so `leadline` comes from the wheel alone.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import mido
import pytest

from tests.conftest import REPO

# what the wheel is built from (a copy: a build in the clone would leave build/ there for the next one)
SOURCES = ["pyproject.toml", "README.md", "daemon", "training", "bench", "models/default"]
# `leadline serve` with its MIDI layer replaced by a marker: reaching it means settings and model loaded
SERVE_UNTIL_PORTS = ("import sys, leadline.daemon.ports as p\n"
                     "def trap(*a, **k):\n"
                     "    raise SystemExit('REACHED THE MIDI PORTS')\n"
                     "p.choose_api = p.MidiIO = trap\n"
                     "from leadline.daemon.cli import main\n"
                     "sys.exit(main(['serve']))\n")


def run(*cmd, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"{p.args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel of this tree installed in it (no dependencies: borrowed)."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("building the wheel offline needs setuptools here: pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copyfile(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    ok(run(*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp / "dist", src,
           cwd=tmp))
    (wheel,) = (tmp / "dist").glob("leadline-*.whl")
    ok(run(sys.executable, "-m", "venv", "--without-pip", tmp / "venv", cwd=tmp))
    python = tmp / "venv" / "bin" / "python"
    purelib = ok(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp)).stdout
    borrowed = dict.fromkeys(sysconfig.get_path(k) for k in ("purelib", "platlib"))
    Path(purelib.strip(), "borrowed-dependencies.pth").write_text("".join(f"{p}\n" for p in borrowed))
    ok(run(*pip, "--python", python, "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp))
    return tmp / "venv"


@pytest.fixture
def empty(tmp_path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def test_leadline_is_imported_from_the_wheel_not_the_clone(venv, empty):
    out = ok(run(venv / "bin" / "python", "-c", "import sys, leadline.daemon, leadline.training; "
                 "print(leadline.daemon.__file__, leadline.training.__file__, *sys.path, sep='\\n')",
                 cwd=empty)).stdout.split("\n")
    here = site_packages(venv) / "leadline"
    assert Path(out[0]).parent == here / "daemon" and Path(out[1]).parent == here / "training", out
    assert not [p for p in out[2:] if p and Path(p).resolve() in (REPO, REPO / "daemon")], out


def test_the_wheel_installs_one_import_name_of_ours(venv):
    """Not `daemon` (python-daemon's import name) nor `training`: everything under `leadline`."""
    (info,) = site_packages(venv).glob("leadline-*.dist-info")
    top = (info / "top_level.txt").read_text().split() if (info / "top_level.txt").exists() else []
    installed = sorted({Path(line.split(",")[0]).parts[0] for line in (info / "RECORD").read_text().splitlines()}
                       - {".."})  # (../../../bin/leadline: the console script)
    assert installed == ["leadline", info.name] and top == ["leadline"], (installed, top)


def test_version_comes_from_the_package_metadata(venv, empty):
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert ok(run(venv / "bin" / "leadline", "--version", cwd=empty)).stdout.strip() == f"leadline {version}"


def test_doctor_finds_the_bundled_model(venv, empty):
    p = run(venv / "bin" / "leadline", "doctor", cwd=empty)  # exit 1 where no MIDI backend runs: not ours
    bundled = site_packages(venv) / "leadline" / "models" / "default"
    assert f"ok    model: {bundled} (the bundled one): 2 x 256 LSTM" in p.stdout, p.stdout + p.stderr
    assert "FIX   model" not in p.stdout and "Traceback" not in p.stderr


def test_respond_answers_a_daw_clip(venv, empty):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("track_name", name="1-MIDI")])
    for pitch in (64, 67, 69, 71, 72, 71, 69, 67):
        track += [mido.Message("note_on", note=pitch, velocity=100), mido.Message("note_off", note=pitch, time=240)]
    mid.tracks.append(track)
    mid.save(empty / "clip.mid")
    p = ok(run(venv / "bin" / "leadline", "respond", "clip.mid", "-o", "out.mid", cwd=empty))
    assert "the player's 8 notes" in p.stdout, p.stdout
    answer = [m for m in mido.MidiFile(empty / "out.mid").tracks[2] if m.type == "note_on" and m.velocity]
    assert answer, "leadline answered with notes"


def test_serve_starts_with_the_bundled_model_and_default_settings(venv, empty):
    p = run(venv / "bin" / "python", "-c", SERVE_UNTIL_PORTS, cwd=empty)
    assert p.returncode == 1 and p.stderr.strip().endswith("REACHED THE MIDI PORTS"), p.stderr
    assert "leadline serve:" not in p.stderr, p.stderr
