"""Expected errors through the real CLI: exit code 1 and one line on stderr naming the file or key, no traceback.

Each case runs `python -m leadline.daemon.cli ...` in a subprocess, so the exit code and stderr are the real ones.
Only failing cases: `leadline serve` with a good model would open MIDI ports. Serve runs with its MIDI layer
booby-trapped, which proves a bad model or setting is refused before any port opens. Commands that import torch
(train, export) run, but for one, in children forked from a process that imported it once
(tests/training/test_atomic.py's Zygote): real processes running `leadline.daemon.cli.main`, without 3-7 s of
import each.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA_DIR, TINY_DATA, TINY_TRAIN
from tests.training.test_atomic import Zygote

MIDI = SHARED_DATA_DIR / "pop909" / "001.mid"
# `leadline` with leadline.daemon.ports' entry points replaced by a trap: serve must fail before it reaches them
TRAPPED = ("import sys, leadline.daemon.ports as p\n"
           "def trap(*a, **k):\n"
           "    raise SystemExit('leadline serve: TRAP: MIDI opened before the model and settings were checked')\n"
           "p.choose_api = p.MidiIO = trap\n"
           "from leadline.daemon.cli import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


def leadline(*argv: str, trap_ports: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", TRAPPED] if trap_ports else [sys.executable, "-m", "leadline.daemon.cli"]
    return subprocess.run(cmd + [str(a) for a in argv], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """`forked.run(*argv)`: `leadline ARGV` in a child of a process that has torch imported."""
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def assert_one_line_error(p: subprocess.CompletedProcess, command: str, *names: str) -> str:
    """Exit 1, stderr one line `leadline COMMAND: ...` holding every one of `names`; returns that line."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"leadline {command}: "), lines[0]
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


# --- models ---------------------------------------------------------------------------------------------

def _truncate(d):
    (d / "model.onnx").write_bytes((d / "model.onnx").read_bytes()[:3000])
    return d / "model.onnx"


def _empty_onnx(d):
    (d / "model.onnx").write_bytes(b"")
    return d / "model.onnx"


def _no_onnx(d):
    (d / "model.onnx").unlink()
    return d / "model.onnx"


def _old_codec(d):
    card = json.loads((d / "card.json").read_text())
    (d / "card.json").write_text(json.dumps(dict(card, codec_version=0)))
    return d / "card.json"


def _not_json(d):
    (d / "card.json").write_text("{'model': not json")
    return d / "card.json"


def _no_card(d):
    (d / "card.json").unlink()
    return d / "card.json"


def _wrong_shape(d):  # the card says hidden 64, the graph was exported with 32
    card = json.loads((d / "card.json").read_text())
    (d / "card.json").write_text(json.dumps(dict(card, model=dict(card["model"], hidden=64))))
    return d / "model.onnx"


BREAKS = [_truncate, _empty_onnx, _no_onnx, _old_codec, _not_json, _no_card, _wrong_shape]


@pytest.mark.parametrize("brk", BREAKS, ids=lambda f: f.__name__.strip("_"))
def test_serve_refuses_a_broken_model_before_opening_ports(tiny_model, tmp_path, brk):
    d = tmp_path / "model"
    shutil.copytree(tiny_model.path, d)
    culprit = brk(d)
    assert_one_line_error(leadline("serve", "--model", d, trap_ports=True), "serve", culprit)


@pytest.mark.parametrize("brk", [_truncate, _old_codec], ids=lambda f: f.__name__.strip("_"))
def test_respond_and_eval_refuse_a_broken_model(tiny_model, tiny_cache, tmp_path, brk):
    d = tmp_path / "model"
    shutil.copytree(tiny_model.path, d)
    culprit = brk(d)
    assert_one_line_error(leadline("respond", MIDI, "-o", tmp_path / "out.mid", "--model", d), "respond", culprit)
    assert_one_line_error(leadline("eval", "--model", d, "--data", tiny_cache), "eval", culprit)
    assert not (tmp_path / "out.mid").exists()


def test_a_missing_model_directory(tmp_path, tiny_cache):
    nope = tmp_path / "nope"  # the brief's /nope, somewhere it surely does not exist
    assert_one_line_error(leadline("serve", "--model", nope, trap_ports=True), "serve", nope, "leadline export")
    assert_one_line_error(leadline("serve", "--model", nope), "serve", nope)  # through `-m leadline.daemon.cli` too
    assert_one_line_error(leadline("respond", MIDI, "-o", tmp_path / "o.mid", "--model", nope), "respond", nope)
    assert_one_line_error(leadline("eval", "--model", nope, "--data", tiny_cache), "eval", nope)
    assert not nope.exists()


def test_a_relative_model_path_is_beside_the_config_file_or_in_the_working_directory(tmp_path):
    config = tmp_path / "etc" / "leadline.yaml"
    config.parent.mkdir()
    config.write_text("engine:\n  model: mine\n")
    assert_one_line_error(leadline("serve", "--config", config, trap_ports=True), "serve", tmp_path / "etc" / "mine")
    assert_one_line_error(leadline("serve", "--model", "nope-15", trap_ports=True), "serve", REPO / "nope-15")


# --- settings -------------------------------------------------------------------------------------------

def _config(tmp_path, name, content: bytes | None):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("args, names", [
    (["--set", "clock.timeout_ms=-5"], ["clock.timeout_ms", "-5"]),
    (["--set", "clock.timout_ms=500"], ["clock.timout_ms", "unknown"]),
    (["--set", "sampling.low=Q9"], ["sampling.low", "Q9"]),
    (["--set", "clock.bpm=["], ["clock.bpm", "["]),  # not a YAML value
    (["--set", "clock"], ["clock", "key=value"]),
    (["--set", "record.dir=/proc/leadline-takes"], ["record.dir", "/proc/leadline-takes", "cannot write"]),
    (["--set", "midi.max_note_beats=-1"], ["midi.max_note_beats", "-1"]),
    (["--set", "midi.echo_ms=-3"], ["midi.echo_ms", "-3"]),
    (["--set", "control.learn_cc=200"], ["control.learn_cc", "200"]),
    (["--set", "song.meter=4/0"], ["song.meter", "4/0"]),
    (["--set", "song.meter=x"], ["song.meter", "'x'"]),
], ids=["out-of-range", "unknown-key", "bad-note", "not-yaml", "no-value", "record-dir", "max-note", "echo",
        "learn-cc", "meter-4/0", "meter-x"])
def test_a_bad_setting_is_named(args, names):
    assert_one_line_error(leadline("serve", *args, trap_ports=True), "serve", *names)


CONFIGS = [
    ("broken.yaml", b"clock: {bpm: 120\nmidi: [", ["broken.yaml", "YAML"]),
    ("binary.yaml", b"\xff\xfe\x00\x81 not text", ["binary.yaml"]),
    ("missing.yaml", None, ["missing.yaml", "No such file"]),
    ("list.yaml", b"- clock\n- midi\n", ["list.yaml", "mapping"]),
    ("value.yaml", b"clock:\n  timeout_ms: -5\n", ["clock.timeout_ms", "-5"]),
    ("typo.yaml", b"clokc:\n  bpm: 100\n", ["clokc", "unknown"]),
    ("tag.yaml", b"clock: !!python/object/apply:os.system [echo hi]\n", ["tag.yaml", "YAML"]),
]


@pytest.mark.parametrize("name, content, names", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_a_bad_config_file_is_named(tmp_path, name, content, names):
    path = _config(tmp_path, name, content)
    p = leadline("serve", "--config", path, trap_ports=True)
    assert_one_line_error(p, "serve", *names)
    assert "hi" not in p.stdout  # safe_load: the tag is refused, never run


# --- MIDI backends --------------------------------------------------------------------------------------

def test_midi_probes_keep_the_c_libraries_quiet():
    """ALSA without /dev/snd/seq and a JACK server that is not there: no "ALSA lib ... failed" or "Cannot
    connect to server" on stderr, only leadline's own line (none where ALSA works: then it lists ports)."""
    env = dict(os.environ, JACK_DEFAULT_SERVER="leadline-no-such-server")
    p = subprocess.run([sys.executable, "-m", "leadline.daemon.cli", "ports"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    if p.returncode == 0:
        assert p.stdout.startswith("backend: alsa") and not p.stderr, p.stderr
    else:
        assert_one_line_error(p, "ports", "no MIDI backend works here")


def test_passing_over_a_backend_is_said_once_in_leadlines_words():
    if sys.platform != "linux":
        pytest.skip("the auto order tried here is Linux's: ALSA, then JACK")
    script = ("import sys, leadline.daemon.ports as p\n"
              "p._usable = lambda api: api == p.APIS['jack']\n"
              "p.list_ports = lambda api: (['a'], ['b'])\n"
              "from leadline.daemon.cli import main\n"
              "sys.exit(main(['ports', '--api', 'auto']))\n")
    p = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("backend: jack"), p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "MIDI: alsa is not usable, using jack: " in lines[0], p.stderr


# --- data, training, export ------------------------------------------------------------------------------

def test_data_build_on_a_missing_source(tmp_path):
    p = leadline("data", "build", "--out", tmp_path / "cache", tmp_path / "no_such_folder")
    assert_one_line_error(p, "data", tmp_path / "no_such_folder")
    assert not (tmp_path / "cache").exists()


def test_data_build_with_a_bad_setting(tmp_path):
    p = leadline("data", "build", "--out", tmp_path / "c", MIDI, "--set", "data.split=[0.5, 0.6, 0.1]")
    assert_one_line_error(p, "data", "data.split")


def test_train_on_a_folder_that_is_not_a_cache(forked, tmp_path):
    (tmp_path / "midi").mkdir()
    shutil.copyfile(MIDI, tmp_path / "midi" / "001.mid")
    p = forked.run("train", "--data", tmp_path / "midi", "--out", tmp_path / "run")
    assert_one_line_error(p, "train", tmp_path / "midi", "leadline data build")
    assert not (tmp_path / "run").exists()


@pytest.fixture()
def checkpoint(tiny_model):
    """A small valid checkpoint dict (the tiny model's weights), to save whole or broken."""
    from leadline.daemon import codec

    m = tiny_model.torch_model
    return {"state_dict": m.state_dict(), "model_args": m.args.as_dict(), "codec_version": codec.CODEC_VERSION,
            "step": 7, "config": {}}


def _save(ckpt, path, cut: bool = False):
    import io

    import torch

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    raw = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw[:len(raw) // 2] if cut else raw)
    return path


def test_export_without_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    # through `python -m leadline.daemon.cli`, torch import and all
    p = leadline("export", tmp_path / "run", "--out", tmp_path / "model")
    assert_one_line_error(p, "export", tmp_path / "run" / "checkpoint.pt", "leadline train")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("kind", ["truncated", "other codec", "not a checkpoint", "wrong shape"])
def test_export_of_a_corrupt_checkpoint(forked, checkpoint, tmp_path, kind):
    path = tmp_path / "run" / "checkpoint.pt"
    if kind == "truncated":
        _save(checkpoint, path, cut=True)
    elif kind == "other codec":
        _save(dict(checkpoint, codec_version=0), path)
    elif kind == "not a checkpoint":
        _save({"weights": checkpoint["state_dict"]}, path)
    else:
        _save(dict(checkpoint, model_args=dict(checkpoint["model_args"], hidden=48)), path)
    p = forked.run("export", tmp_path / "run", "--out", tmp_path / "model")
    assert_one_line_error(p, "export", path)
    assert not (tmp_path / "model").exists() and [q.name for q in tmp_path.iterdir()] == ["run"]


def test_train_resume_from_a_corrupt_checkpoint(forked, checkpoint, tiny_cache, tmp_path):
    from leadline.daemon import config

    run = tmp_path / "run"
    _save(checkpoint, run / "checkpoint.pt", cut=True)
    (run / "config.json").write_text(json.dumps(config.as_dict(config.load(None, TINY_DATA + TINY_TRAIN))))
    p = forked.run("train", "--data", tiny_cache, "--out", run, "--resume")
    assert_one_line_error(p, "train", run / "checkpoint.pt")


# --- security: no network in the daemon, no unsafe loaders anywhere ------------------------------------------

NETWORK_MODULES = {"asyncio", "http", "urllib", "urllib3", "requests", "httpx", "aiohttp", "websockets", "ssl",
                   "socketserver", "ftplib", "smtplib", "telnetlib", "xmlrpc", "zmq", "paramiko"}
PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}


def python_files() -> list:
    files = [p for d in ("daemon", "training", "bench", "tests") for p in (REPO / d).rglob("*.py")]
    return sorted(files + list(REPO.glob("*.py")))


def _name(node) -> str:
    """'a.b.c' for a Name/Attribute chain, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _name(node.value)):
        return f"{base}.{node.attr}"
    return ""


def unsafe_calls(source: str) -> list[str]:
    """What in `source` loads data unsafely: yaml.load & co, any pickle-family load, torch.load without
    weights_only=True, np.load with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS | {"torch", "yaml"}:
            found += [f"from {node.module} import {a.name}" for a in node.names
                      if a.name in UNSAFE_YAML | {"Unpickler", "loads"} or (node.module or "") in PICKLERS]
        if not isinstance(node, ast.Call):
            continue
        func = _name(node.func)
        kw = {k.arg: k.value for k in node.keywords}
        root, _, attr = func.rpartition(".")
        if root == "yaml" and attr in UNSAFE_YAML:
            found.append(func)
        if root.split(".")[0] in PICKLERS and attr in ("load", "loads", "Unpickler", "open"):
            found.append(func)
        weights_only = kw.get("weights_only")
        if func == "torch.load" and not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
            found.append("torch.load without weights_only=True")
        allow = kw.get("allow_pickle")
        if attr == "load" and root in ("np", "numpy") and not (allow is None or isinstance(allow, ast.Constant)
                                                              and allow.value is False):
            found.append("np.load with allow_pickle")
    return found


def network_uses(source: str) -> list[str]:
    """Imports of network modules, and any use of `socket` but socket.gethostname, in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in NETWORK_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in NETWORK_MODULES | {"socket"}:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and _name(node.value) == "socket" and node.attr != "gethostname":
            found.append(f"socket.{node.attr}")
    text_marks = ("socket.socket", "create_connection", "start_server", "urlopen", "http.client", "requests.")
    return found + [m for m in text_marks if m in source]


def test_the_security_checks_can_fail():
    assert unsafe_calls("import yaml\nyaml.load(f)\n") == ["yaml.load"]
    assert unsafe_calls("yaml.load(f, Loader=yaml.SafeLoader)") == ["yaml.load"]  # safe_load, by name only
    assert unsafe_calls("pickle.loads(b)") == ["pickle.loads"]
    assert unsafe_calls("from pickle import load") == ["from pickle import load"]
    assert unsafe_calls("torch.load(p)") == unsafe_calls("torch.load(p, weights_only=False)") != []
    assert unsafe_calls("np.load(p, allow_pickle=True)") == ["np.load with allow_pickle"]
    assert unsafe_calls("yaml.safe_load(t)\ntorch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)") == []
    assert network_uses("import socket\nsocket.gethostname()") == []
    assert network_uses("import socket\ns = socket.socket()") != []
    assert network_uses("import urllib.request") == ["urllib.request"]
    assert network_uses("async def f():\n    import asyncio\n    await asyncio.start_server(h, 'x', 1)") != []


def test_the_daemon_opens_no_network_socket():
    files = sorted((REPO / "daemon").glob("*.py"))
    assert len(files) > 10
    found = {p.name: uses for p in files if (uses := network_uses(p.read_text()))}
    assert found == {}


def test_no_unsafe_loader_anywhere():
    """Config through yaml.safe_load only, no pickle, every torch.load with weights_only=True."""
    files = python_files()
    assert len(files) > 40 and REPO / "daemon" / "config.py" in files
    found = {str(p.relative_to(REPO)): uses for p in files if (uses := unsafe_calls(p.read_text()))}
    assert found == {}
    assert "yaml.safe_load(" in (REPO / "daemon" / "config.py").read_text()
