"""Settings: frozen dataclasses per component, loaded strictly from YAML with `--set` overrides.

Defaults live here; `config.yaml` at the top of the repository documents each one. Unknown keys and bad
values raise `ConfigError` naming the dotted key and the value it got.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from leadline.daemon.errors import UserError
from leadline.daemon.meter import parse_meter
from leadline.daemon.music import SCALES, note_number, parse_key, pitch_class  # noqa: F401 (their home was here)


class ConfigError(UserError, ValueError):
    """A setting that is unknown or has a bad value; the message names the dotted key."""


@dataclass(frozen=True)
class MidiConfig:
    api: Literal["auto", "alsa", "jack", "coremidi", "windows"] = "auto"
    client_name: str = "leadline"
    in_port: str = "leadline in"
    out_port: str = "leadline out"
    connect_in: Optional[str] = None  # substring of an existing input port to connect to instead of virtual
    connect_out: Optional[str] = None
    in_channel: int = 0  # 0 = omni, else 1..16
    out_channel: int = 1
    passthrough: bool = False
    queue_size: int = 4096
    jack_native: bool = True  # JACK: leadline's own client, notes written at their JACK frame
    max_held_beats: float = 16.0  # a player note held longer counts as released (its note-off was lost)
    max_note_beats: Optional[float] = None  # leadline's own notes end after this many beats; None/0 = off
    echo_ms: float = 30.0  # leadline's own message back on its input within this is an echo; 0 = off
    backing_channels: tuple[int, ...] = ()  # notes on these channels (1..16) of the input are the band's
    backing_port: Optional[str] = "leadline backing"  # a second virtual input: the band's; None = none

    def check(self) -> None:
        for ch in self.backing_channels:
            _range("midi.backing_channels", ch, 1, 16)
        if self.in_channel and self.in_channel in self.backing_channels:
            raise ConfigError(f"midi.backing_channels: {list(self.backing_channels)} (holds midi.in_channel "
                              f"{self.in_channel}: the player's channel cannot be the band's)")
        if self.backing_port is not None and not self.backing_port.strip():
            raise ConfigError(f"midi.backing_port: {self.backing_port!r} (a port name, or null for none)")
        if self.backing_port in (self.in_port, self.out_port):
            raise ConfigError(f"midi.backing_port: {self.backing_port!r} (the name of another of leadline's ports)")
        _range("midi.max_held_beats", self.max_held_beats, 1, 1024)
        if self.max_note_beats:  # (null or 0: off)
            _range("midi.max_note_beats", self.max_note_beats, 1 / 24, 1024)
        _range("midi.echo_ms", self.echo_ms, 0.0, 1000.0)
        _range("midi.in_channel", self.in_channel, 0, 16)
        _range("midi.out_channel", self.out_channel, 1, 16)
        _range("midi.queue_size", self.queue_size, 16, 1_000_000)


@dataclass(frozen=True)
class ClockConfig:
    source: Literal["auto", "external", "internal"] = "auto"
    bpm: float = 120.0
    timeout_ms: float = 500.0
    send_clock: bool = False
    bandwidth_hz: float = 0.25

    def check(self) -> None:
        _range("clock.bpm", self.bpm, 20.0, 400.0)
        _range("clock.timeout_ms", self.timeout_ms, 50.0, 10_000.0)
        _range("clock.bandwidth_hz", self.bandwidth_hz, 0.05, 10.0)


def bundled_model() -> Path:
    """The model shipped with leadline, beside the daemon package: `leadline/models/default` in an installed
    wheel (package data), the clone's top-level `models/default` in a source tree or editable install."""
    return Path(__file__).resolve().parent.parent / "models" / "default"


@dataclass(frozen=True)
class EngineConfig:
    model: Optional[str] = None  # model directory; None: the bundled model (set on construction)
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 1
    lookahead_ms: float = 0.7
    switch_interval_ms: float = 0.5

    def __post_init__(self) -> None:
        if self.model is None:
            object.__setattr__(self, "model", str(bundled_model()))

    def check(self) -> None:
        if not self.model:
            raise ConfigError(f"engine.model: {self.model!r} (a model directory, or null for the bundled model)")
        _range("engine.threads", self.threads, 0, 256)
        _range("engine.lookahead_ms", self.lookahead_ms, 0.0, 50.0)
        _range("engine.switch_interval_ms", self.switch_interval_ms, 0.05, 5.0)


@dataclass(frozen=True)
class SeedConfig:
    window: int = 64

    def check(self) -> None:
        _range("seed.window", self.window, 1, 4096)


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0  # 1.0 / 0.99 / 0.5: chosen on the validation split, see README "The model"
    top_p: float = 0.99
    key: Optional[str] = None  # "E minor", "A dorian", "auto", or null for no constraint
    low: str = "E2"
    high: str = "E6"
    velocity_scale: float = 1.0
    seed: Optional[int] = None
    repeat_penalty: float = 0.3  # logits off the previous onset's pitches, times the run of that pitch set
    echo_player: float = 0.6  # weight of the session memory of the player's motifs (daemon/memory.py)

    def check(self) -> None:
        _range("sampling.temperature", self.temperature, 0.05, 5.0)
        _range("sampling.echo_player", self.echo_player, 0.0, 1.0)
        _range("sampling.top_p", self.top_p, 0.01, 1.0)
        _range("sampling.repeat_penalty", self.repeat_penalty, 0.0, 20.0)
        _range("sampling.velocity_scale", self.velocity_scale, 0.0, 4.0)
        for key in ("low", "high"):
            _parsed(f"sampling.{key}", getattr(self, key), note_number)
        if note_number(self.low) >= note_number(self.high):
            raise ConfigError(f"sampling.low: {self.low!r} must be below sampling.high {self.high!r}")
        if self.key not in (None, "auto"):
            _parsed("sampling.key", self.key, parse_key)


@dataclass(frozen=True)
class ExpressionConfig:
    mode: Literal["off", "bends", "full"] = "full"  # full: bends and vibrato; bends: no vibrato; off: plain notes
    bend_range: int = 2  # semitones a full pitch bend moves (sent as RPN 0 at start and after a reconnect)
    depth: float = 1.0  # bends and vibrato scaled by this (1: as the model plays them); control.expression_cc

    def check(self) -> None:
        _range("expression.bend_range", self.bend_range, 1, 24)
        _range("expression.depth", self.depth, 0.0, 1.0)


@dataclass(frozen=True)
class RespondConfig:
    after_beats: float = 1.0
    bars: int = 2

    def check(self) -> None:
        _range("respond.after_beats", self.after_beats, 0.25, 64.0)
        _range("respond.bars", self.bars, 1, 64)


@dataclass(frozen=True)
class TradeConfig:
    bars: int = 4

    def check(self) -> None:
        _range("trade.bars", self.bars, 1, 64)


@dataclass(frozen=True)
class CountInConfig:
    bars: int = 0  # bars of clicks after Start before leadline plays (0 = none)
    note: Union[int, str] = "E5"  # GM drums: 76 = hi wood block
    channel: int = 10
    velocity: int = 100  # the bar's first click; the others at 3/4 of it

    def check(self) -> None:
        _range("song.count_in.bars", self.bars, 0, 2)
        _range("song.count_in.channel", self.channel, 1, 16)
        _range("song.count_in.velocity", self.velocity, 1, 127)
        _parsed("song.count_in.note", self.note, note_number)


@dataclass(frozen=True)
class SongConfig:
    meter: str = "4/4"  # bars, turns, phrase starts and strong beats (leadline.daemon.meter)
    swing: Union[float, Literal["auto", "off"]] = "auto"  # 0.5 straight .. 0.75; auto: the player's
    count_in: CountInConfig = field(default_factory=CountInConfig)

    def check(self) -> None:
        _parsed("song.meter", self.meter, parse_meter)
        if not isinstance(self.swing, str):
            _range("song.swing", self.swing, 0.5, 0.75)
        self.count_in.check()


@dataclass(frozen=True)
class ControlConfig:
    channel: int = 0  # 0 = any channel
    temperature_cc: Optional[int] = 21
    mode_cc: Optional[int] = 22
    enable_cc: Optional[int] = 23
    panic_cc: Optional[int] = 24
    learn_cc: Optional[int] = None  # any value > 0 starts MIDI learn live (see leadline.daemon.learn)
    learn_timeout_s: float = 10.0  # MIDI learn: a target with no control moved within this is skipped
    meter_cc: Optional[int] = 25
    echo_cc: Optional[int] = 26
    expression_cc: Optional[int] = 27

    def check(self) -> None:
        _range("control.channel", self.channel, 0, 16)
        _range("control.learn_timeout_s", self.learn_timeout_s, 1.0, 600.0)
        for key in ("temperature_cc", "mode_cc", "enable_cc", "panic_cc", "learn_cc", "meter_cc", "echo_cc",
                    "expression_cc"):
            v = getattr(self, key)
            if v is not None:
                _range(f"control.{key}", v, 0, 119)


@dataclass(frozen=True)
class RecordConfig:
    dir: Optional[str] = None

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class DataConfig:
    programs: tuple[int, ...] = tuple(range(24, 32))  # GM guitars
    name_patterns: tuple[str, ...] = ("lead", "solo", "gtr", "guitar", "melody")
    fallback_programs: tuple[int, ...] = ()  # e.g. (0,) for corpora without guitars; () = any program
    max_polyphony: float = 1.6  # mean notes per onset above this -> rhythm part, not a lead line
    min_notes: int = 32
    unique_factor: float = 0.0  # >0: drop songs whose distinct-pitch ratio is below this
    transpose: tuple[int, ...] = (-2, -1, 1, 2)  # semitone shifts added to the training split
    snap_below: float = 0.6  # training lines with fewer onsets than this share on the grid are moved onto it
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0

    def check(self) -> None:
        _range("data.max_polyphony", self.max_polyphony, 1.0, 16.0)
        _range("data.min_notes", self.min_notes, 1, 100_000)
        _range("data.unique_factor", self.unique_factor, 0.0, 1.0)
        _range("data.snap_below", self.snap_below, 0.0, 1.0)
        if len(self.split) != 3 or abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) < 0:
            raise ConfigError(f"data.split: {list(self.split)} (three fractions adding up to 1)")
        for p in self.programs + self.fallback_programs:
            _range("data.programs", p, 0, 127)
        for t in self.transpose:
            _range("data.transpose", t, -12, 12)


@dataclass(frozen=True)
class TrainConfig:
    embed: int = 128
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    batch: int = 32
    chunk: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    epochs: int = 20
    patience: int = 3
    max_steps: int = 0  # 0 = no limit
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    harmony_dropout: float = 0.3  # share of training rows a chunk sees with no backing

    def check(self) -> None:
        for key, lo, hi in (("embed", 1, 4096), ("hidden", 1, 8192), ("layers", 1, 16),
                            ("batch", 1, 65536), ("chunk", 2, 100_000), ("epochs", 1, 10_000),
                            ("patience", 1, 1000), ("max_steps", 0, 10**9)):
            _range(f"train.{key}", getattr(self, key), lo, hi)
        _range("train.dropout", self.dropout, 0.0, 0.9)
        _range("train.harmony_dropout", self.harmony_dropout, 0.0, 1.0)
        _range("train.lr", self.lr, 1e-7, 1.0)
        _range("train.clip", self.clip, 0.0, 1e6)


@dataclass(frozen=True)
class Config:
    mode: Literal["respond", "trade", "duet"] = "respond"
    midi: MidiConfig = field(default_factory=MidiConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    seed: SeedConfig = field(default_factory=SeedConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    expression: ExpressionConfig = field(default_factory=ExpressionConfig)
    respond: RespondConfig = field(default_factory=RespondConfig)
    trade: TradeConfig = field(default_factory=TradeConfig)
    song: SongConfig = field(default_factory=SongConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if dataclasses.is_dataclass(v):
                v.check()


# --- loading -----------------------------------------------------------------------------------------

def _range(key: str, value: Any, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key}: {value!r} (must be between {lo} and {hi})")


def _parsed(key: str, value: Any, parse) -> Any:
    """`parse(value)`; a ValueError becomes the one-line ConfigError naming `key` and the value."""
    try:
        return parse(value)
    except ValueError as e:
        raise ConfigError(f"{key}: {value!r} ({e})") from None


def _convert(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: {value!r} (expected a mapping)")
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value is False and "off" in typing.get_args(tp):  # YAML 1.1 reads a bare off as false
            value = "off"
        if value not in typing.get_args(tp):
            choices = "|".join(map(str, typing.get_args(tp)))
            raise ConfigError(f"{key}: {value!r} (expected one of {choices})")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        for i, arg in enumerate(args):  # the first alternative that takes the value
            try:
                return _convert(key, arg, value)
            except ConfigError:
                if i == len(args) - 1:
                    raise ConfigError(f"{key}: {value!r} (expected {' or '.join(map(_type_name, args))})") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: {value!r} (expected a list)")
        args = typing.get_args(tp)
        item = args[0]
        return tuple(_convert(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{key}: {value!r} (expected {getattr(tp, '__name__', tp)})")


def _type_name(tp: Any) -> str:
    """How an error names a type: 'float', 'one of auto|off'."""
    if typing.get_origin(tp) is Literal:
        return "one of " + "|".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            raise ConfigError(f"{prefix}{k}: unknown setting (known: {', '.join(sorted(names))})")
    return cls(**{k: _convert(prefix + k, hints[k], v) for k, v in data.items()})


def parse_override(text: str) -> tuple[list[str], Any]:
    """'clock.bpm=140' -> (['clock', 'bpm'], 140)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, like clock.bpm=140")
    try:
        return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: {raw!r} is not a YAML value ({str(e).splitlines()[0]})") from None


def load(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Config from `path` (None: defaults only) with `--set` overrides applied; raises ConfigError.

    A relative `engine.model` is a folder beside the config file when the file names it, else (`--set`)
    in the working directory; either way `engine.model` comes out absolute.
    """
    data = _read(path) if path is not None else {}
    engine = data.get("engine")
    if isinstance(engine, dict) and isinstance(engine.get("model"), str) and engine["model"]:
        folder = os.path.dirname(os.path.abspath(path))
        engine["model"] = os.path.join(folder, os.path.expanduser(engine["model"]))  # an absolute one stays
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {k} is not a section")
        node[keys[-1]] = value
    cfg = _build(Config, data)
    cfg.check()
    model = os.path.abspath(os.path.expanduser(cfg.engine.model))
    return dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, model=model))


def from_dict(data: dict) -> Config:
    """A checked Config from a plain mapping (as `as_dict` writes it, e.g. in a session log)."""
    cfg = _build(Config, data)
    cfg.check()
    return cfg


def _read(path: str | Path) -> dict:
    """The settings mapping of a YAML file; raises ConfigError."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path}: not a YAML text file (not UTF-8)") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings at the top")
    return data


def as_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (tuples as lists), for writing next to results."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
