"""Rendering a .mid to a .wav with FluidSynth and a General MIDI soundfont, to audition without a synth."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from leadline.daemon.errors import UserError

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/usr/share/sounds/sf3/default-GM.sf3")


def soundfont() -> Path:
    for p in SOUNDFONTS:
        if Path(p).is_file():
            return Path(p)
    raise UserError("no General MIDI soundfont found; install one: sudo apt-get install fluid-soundfont-gm")


def render(mid: str | Path, wav: str | Path, rate: int = 44100) -> Path:
    """Render `mid` to `wav` (FluidSynth, fast render, no audio device)."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise UserError("fluidsynth is not installed: sudo apt-get install fluidsynth fluid-soundfont-gm")
    wav = Path(wav)
    cmd = [exe, "-ni", "-q", "-g", "0.8", "-r", str(rate), "-F", str(wav), str(soundfont()), str(mid)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not wav.is_file():
        raise UserError(f"fluidsynth failed to render {mid}: {(r.stderr or r.stdout).strip()[:200]}")
    return wav
