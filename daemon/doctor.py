"""`leadline doctor`: checks this machine for what leadline needs, one line a check: ok, warn or FIX (and how).

Nothing is started: MIDI backends are probed as `leadline serve` would (JACK_NO_START_SERVER is set), the
model is loaded and, where onnxruntime offers CUDA, a CUDA engine is built on it to see whether it really
loads. The exit code is 1 when a line says FIX (`leadline serve` would fail or misbehave), else 0.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
from pathlib import Path

from leadline.daemon import config
from leadline.daemon.errors import UserError

OK, WARN, FIX = "ok", "warn", "FIX"
MIN_PYTHON = (3, 10)  # pyproject.toml: requires-python


class Report:
    """Prints one line a check and counts the lines of each level."""

    def __init__(self, out=print) -> None:
        self.out = out
        self.counts = {OK: 0, WARN: 0, FIX: 0}

    def add(self, level: str, what: str, text: str) -> None:
        self.counts[level] += 1
        self.out(f"{level:4s}  {what}: {text}")


def check_python(r: Report) -> None:
    v = sys.version_info
    need = f"; leadline needs {'.'.join(map(str, MIN_PYTHON))} or newer" if v[:2] < MIN_PYTHON else ""
    r.add(FIX if need else OK, "python", f"{v.major}.{v.minor}.{v.micro} ({sys.executable}){need}")


def check_midi(r: Report, midi_cfg) -> None:
    """Compiled rtmidi APIs, which backends answer now, the backend `midi.api` picks, its ports."""
    import rtmidi

    from leadline.daemon import ports

    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    compiled = set(rtmidi.get_compiled_api())
    names = [n for n, a in ports.APIS.items() if a in compiled]
    r.add(OK if names else FIX, "python-rtmidi", f"{rtmidi.__version__}, compiled with {', '.join(names)}"
          if names else f"{rtmidi.__version__} without a MIDI API; reinstall python-rtmidi")
    usable = {n: ports._usable(ports.APIS[n]) for n in names}
    for n in names:
        r.add(OK if usable[n] else WARN, f"MIDI {n}", "usable now" if usable[n] else ports.why_unusable(n))
    try:
        with ports.quiet_stderr():
            api, chosen = ports.choose_api(midi_cfg.api)
            ins, outs = ports.list_ports(api)
    except UserError as e:
        r.add(FIX, "MIDI backend", f"midi.api {midi_cfg.api}: {e}")
        return
    r.add(OK, "MIDI backend", f"{chosen} (midi.api: {midi_cfg.api})")
    if chosen == "jack":
        _check_jack_native(r, midi_cfg)
    r.add(OK, f"MIDI ports ({chosen})", f"inputs: {'; '.join(ins) or 'none'} | "
          f"outputs: {'; '.join(outs) or 'none'}")
    _check_connect(r, midi_cfg, chosen, ins, outs)


def _check_jack_native(r: Report, midi_cfg) -> None:
    """Whether leadline's own JACK client (notes at their frame) builds and loads here."""
    if not midi_cfg.jack_native:
        r.add(OK, "JACK client", "python-rtmidi's (midi.jack_native: false): notes leave at a cycle's start")
        return
    from leadline.daemon import jacknative

    try:
        path = jacknative.build()
        jacknative.lib()
    except jacknative.NativeUnavailable as e:
        r.add(WARN, "JACK client", f"leadline's own is unavailable ({e}); python-rtmidi's is used")
        return
    r.add(OK, "JACK client", f"leadline's own, notes written at their frame ({path})")


def _check_connect(r: Report, midi_cfg, backend: str, ins: list[str], outs: list[str]) -> None:
    """midi.connect_in/out name existing ports (required on Windows, which has no virtual ports)."""
    for key, want, found in (("in", midi_cfg.connect_in, ins), ("out", midi_cfg.connect_out, outs)):
        if want is None:
            if backend == "windows":
                r.add(FIX, f"midi.connect_{key}", "Windows MIDI has no virtual ports: create a loopMIDI port "
                      f"and set midi.connect_{key} to its name (docs/ableton.md)")
            continue
        match = [p for p in found if want.lower() in p.lower()]
        r.add(OK if match else FIX, f"midi.connect_{key}", f"{want!r} is {match[0]!r}" if match else
              f"{want!r}: no such {key}put port now; `leadline ports` lists them")


def check_model(r: Report, cfg: config.Config):
    """Load and check the model directory; its ModelInfo, or None after a FIX line."""
    from leadline.daemon.engine import load_model

    try:
        info = load_model(cfg.engine.model)
    except UserError as e:
        r.add(FIX, "model", str(e))
        return None
    card = info.card
    bits = (card.get("validation") or {}).get("bits_per_event")
    extra = [f"created {card['created']}"] if card.get("created") else []
    extra += [f"{bits:.3f} bits/event on validation"] if isinstance(bits, (int, float)) else []
    extra += [str(card["note"])] if card.get("note") else []
    bundled = " (the bundled one)" if Path(info.path).resolve() == config.bundled_model().resolve() else ""
    r.add(OK, "model", f"{info.path}{bundled}: {info.layers} x {info.hidden} LSTM (embed {info.embed}), codec "
          f"{card['codec_version']}, vocabulary {info.vocab}" + "".join(f"; {e}" for e in extra))
    return info


def check_cuda(r: Report, cfg: config.Config, info) -> None:
    """onnxruntime's providers, and whether CUDA really loads: a CUDA graph engine stepped on the model."""
    import onnxruntime as ort

    from leadline.daemon.engine import CUDA, make_engine, quick_step_ms

    r.add(OK, "onnxruntime", f"{ort.__version__}, providers: {', '.join(ort.get_available_providers())}")
    if CUDA not in ort.get_available_providers():
        cpu = "" if cfg.engine.provider == "cuda" else ": the model runs on the CPU"
        r.add(OK, "CUDA", f"not available (onnxruntime without CUDA provider){cpu}; for a GPU, "
              "pip install onnxruntime-gpu in place of onnxruntime")
        return
    if info is None:
        r.add(WARN, "CUDA", "onnxruntime offers it; not tried without a usable model")
        return
    try:
        gpu = make_engine(dataclasses.replace(cfg.engine, provider="cuda"), info)
    except UserError as e:
        r.add(WARN, "CUDA", f"does not load: {e}")
        return
    r.add(OK, "CUDA", f"loads: {gpu.describe()}, {quick_step_ms(gpu):.3f} ms a step")


def check_engine(r: Report, cfg: config.Config, info) -> None:
    """The engine `serve` would run the model on (FIX when engine.provider cannot), and its step time."""
    from leadline.daemon.engine import make_engine, quick_step_ms

    try:
        engine = make_engine(cfg.engine, info)
    except UserError as e:
        r.add(FIX, "engine", str(e))
        return
    r.add(OK, "engine", f"{engine.describe()}, {quick_step_ms(engine):.3f} ms a step "
          f"(engine.provider: {cfg.engine.provider})")


def check_config(r: Report, args) -> config.Config:
    """The settings `serve` would use; built-in defaults (with --model) after a FIX line."""
    model = [f"engine.model={args.model}"] if getattr(args, "model", None) else []
    where = args.config or "built-in defaults"
    try:
        cfg = config.load(args.config, list(args.overrides) + model)
    except UserError as e:
        fix = " or ".join(([args.config] if args.config else []) + (["the --set"] if args.overrides else []))
        r.add(FIX, "config", f"{e}; fix it in {fix or 'the settings'} (the checks below use the defaults)")
        return config.load(None, model)
    r.add(OK, "config", f"{where}" + (f" with --set {' '.join(args.overrides)}" if args.overrides else "")
          + f": mode {cfg.mode}, midi.api {cfg.midi.api}, in channel {cfg.midi.in_channel or 'omni'}, "
          f"out channel {cfg.midi.out_channel}, clock {cfg.clock.source}")
    if cfg.record.dir and not _writable(Path(cfg.record.dir)):
        r.add(FIX, "record.dir", f"{cfg.record.dir}: cannot write there; create it or choose another folder")
    return cfg


def _writable(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def check_extras(r: Report) -> None:
    """What the offline commands need: symusic (respond, plot), matplotlib (plot), FluidSynth (--wav)."""
    for name, used in (("symusic", "MIDI files: respond, plot"), ("matplotlib", "plot, respond --png")):
        try:
            mod = __import__(name)
            r.add(OK, name, getattr(mod, "__version__", "installed"))
        except ImportError:
            pip = "pip install -e ." if name == "symusic" else "pip install -e '.[train]'"
            r.add(WARN, name, f"missing ({used}): {pip}")
    from leadline.daemon.audio import soundfont

    if shutil.which("fluidsynth") is None:
        r.add(WARN, "fluidsynth", "not installed (only for `leadline respond --wav`): "
              "sudo apt-get install fluidsynth fluid-soundfont-gm")
        return
    try:
        r.add(OK, "fluidsynth", f"{shutil.which('fluidsynth')}, soundfont {soundfont()}")
    except UserError as e:
        r.add(WARN, "soundfont", str(e))


def run(args) -> int:
    log = logging.getLogger("leadline.daemon.engine")  # its "engine: ...: why" lines repeat the CUDA and engine lines
    level = log.level
    log.setLevel(level if getattr(args, "verbose", 0) else logging.WARNING)
    try:
        return _run(args)
    finally:
        log.setLevel(level)


def _run(args) -> int:
    r = Report()
    check_python(r)
    cfg = check_config(r, args)
    check_midi(r, cfg.midi)
    info = check_model(r, cfg)
    check_cuda(r, cfg, info)
    if info is not None:
        check_engine(r, cfg, info)
    check_extras(r)
    n = r.counts
    print(f"doctor: {n[OK]} ok, {n[WARN]} warnings, {n[FIX]} to fix" + ("" if n[FIX] else ": ready to serve"))
    return 1 if n[FIX] else 0
