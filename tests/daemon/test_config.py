"""Strict settings: the documented config.yaml, unknown keys and bad values named by dotted key."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from leadline.daemon import config
from leadline.daemon.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _keys(obj, prefix=""):
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from _keys(v, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _yaml_keys(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _yaml_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_config_yaml_documents_every_setting_with_its_default():
    path = REPO / "config.yaml"
    assert set(_yaml_keys(yaml.safe_load(path.read_text()))) == set(_keys(config.Config()))
    assert config.load(path) == config.Config()
    for line in path.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"undocumented setting: {line.strip()}"


@pytest.mark.parametrize("override, message", [
    ("clock.bpmm=1", "clock.bpmm: unknown setting"),
    ("clock.timeout_ms=-5", "clock.timeout_ms: -5.0"),
    ("mode=solo", "mode: 'solo'"),
    ("sampling.key=H minor", "sampling.key: 'H minor'"),
    ("sampling.low=E7", "sampling.low: 'E7'"),
    ("midi.out_channel=17", "midi.out_channel: 17"),
    ("train.hidden=big", "train.hidden: 'big'"),
    ("data.split=[0.5, 0.5]", "data.split"),
    ("song.meter=4/0", "song.meter: '4/0' (the denominator must be one of"),
    ("song.meter=x", "song.meter: 'x' (expected a time signature"),
    ("song.meter=0/4", "song.meter: '0/4'"),
    ("song.meter=4", "song.meter: 4"),
    ("song.swing=0.9", "song.swing: 0.9 (must be between 0.5 and 0.75)"),
    ("song.swing=lazy", "song.swing: 'lazy' (expected float or one of auto|off)"),
    ("song.count_in.bars=3", "song.count_in.bars: 3"),
    ("song.count_in.note=H5", "song.count_in.note: 'H5'"),
    ("song.count_in.channel=0", "song.count_in.channel: 0"),
])
def test_bad_values_name_the_dotted_key_and_value(override, message):
    with pytest.raises(ConfigError) as e:
        config.load(None, [override])
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_unknown_section_and_bad_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("clok:\n  bpm: 100\n")
    with pytest.raises(ConfigError, match="^clok: unknown setting"):
        config.load(p)
    p.write_text("clock: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(p)
    with pytest.raises(ConfigError, match="missing.yaml"):
        config.load(tmp_path / "missing.yaml")


def test_overrides_apply_and_convert():
    c = config.load(None, ["clock.bpm=140", "sampling.key=E minor", "data.transpose=[-1, 1]", "record.dir=x"])
    assert (c.clock.bpm, c.sampling.key, c.data.transpose, c.record.dir) == (140.0, "E minor", (-1, 1), "x")


def test_music_names():
    assert config.note_number("E2") == 40 and config.note_number("C4") == 60 and config.note_number("Bb3") == 58
    assert config.parse_key("E minor") == (4, config.SCALES["minor"])
    with pytest.raises(ValueError):
        config.note_number("X4")


# --- engine.model: the bundled model by default; relative paths from the file that names them -----------

def test_engine_model_defaults_to_the_bundled_model_wherever_leadline_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = config.bundled_model()
    assert bundled == REPO / "models" / "default" and (bundled / "card.json").is_file()  # the clone's
    assert config.Config().engine.model == config.load(None).engine.model == str(bundled)
    assert config.load(None, ["engine.model=null"]).engine.model == str(bundled)


def test_engine_model_in_a_config_file_is_beside_the_file(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    p = tmp_path / "etc" / "leadline.yaml"
    p.write_text("engine:\n  model: models/mine\n")
    assert config.load(p).engine.model == str(tmp_path / "etc" / "models" / "mine")
    assert config.load(Path("../etc/leadline.yaml")).engine.model == str(tmp_path / "etc" / "models" / "mine")
    p.write_text(f"engine:\n  model: {tmp_path / 'abs'}\n")
    assert config.load(p).engine.model == str(tmp_path / "abs")
    p.write_text("engine:\n  model: null\n")
    assert config.load(p).engine.model == str(config.bundled_model())


def test_engine_model_on_the_command_line_is_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "sub" / "c.yaml"
    p.parent.mkdir()
    p.write_text("engine:\n  model: models/mine\n")
    assert config.load(None, ["engine.model=mine"]).engine.model == str(tmp_path / "mine")
    assert config.load(p, ["engine.model=mine"]).engine.model == str(tmp_path / "mine")  # --set wins
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.load(None, ["engine.model=~/m"]).engine.model == str(tmp_path / "home" / "m")


@pytest.mark.parametrize("text", ["engine:\n  model: ''\n", "engine:\n  model: 5\n"])
def test_a_bad_engine_model_names_the_key(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="^engine.model: "):
        config.load(p)
