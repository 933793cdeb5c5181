"""Atomic writes: a process killed at any moment leaves the previous model and checkpoint intact.

`leadline export --force` over a good model directory and `leadline train --resume` are SIGKILLed at a fixed
spread of moments; afterwards the model directory loads and is all old or all new, and checkpoint.pt loads.
The commands run in children forked from one process that imported torch once (a "zygote"): each child is
the real CLI (`leadline.daemon.cli.main`) in its own process, killed for real, without paying for the import each time.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leadline.daemon import engine
from tests.conftest import REPO, TINY_DATA, TINY_TRAIN

# Reads one JSON request a line: {"argv": [...], "out": file, "err": file, "exit_at": k, "no_exchange": bool}.
# Forks a child that runs the CLI with its stdout and stderr going to those files (k > 0: the child exits with
# 137, as if killed, just before its k-th file move, copy or removal; no_exchange: as on a system without
# renameat2); prints the child's pid, then its wait status once it is gone.
ZYGOTE = r"""
import json, os, shutil, sys
# the slow imports, once
import torch, onnx, leadline.daemon.cli, leadline.training.export, leadline.training.trainer, leadline.training.ingest
print("ready", flush=True)

def crash_at(k):
    calls = [0]
    def wrap(fn):
        def hooked(*a, **kw):
            calls[0] += 1
            if calls[0] == k:
                os._exit(137)
            return fn(*a, **kw)
        return hooked
    for mod, name in ((os, "replace"), (os, "rename"), (shutil, "copyfile"), (shutil, "copy2"),
                      (shutil, "copytree"), (shutil, "rmtree"), (leadline.training.export, "_exchange")):
        setattr(mod, name, wrap(getattr(mod, name)))

for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, name in ((1, "out"), (2, "err")):
            os.dup2(os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        if req.get("no_exchange"):
            leadline.training.export._exchange = lambda a, b: False
        if req.get("exit_at"):
            crash_at(req["exit_at"])
        try:
            rc = leadline.daemon.cli.main(req["argv"])
        except BaseException:
            import traceback
            traceback.print_exc()
            rc = 99
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""

# seconds after the fork (the CLI starting, torch already imported) at which an export is killed; the tiny
# export makes its temporary directory after ~0.05 s and swaps it in after ~0.3 s (2 loaded cores)
EXPORT_DELAYS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4)
TRAIN_DELAYS = (0.3, 1.0)  # a resume starts in ~1 s; an epoch of `quick_run`, checkpoint included, ~0.2 s


class Zygote:
    """A process that imported torch and the CLI once and forks a child per command (see ZYGOTE)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the test machine is shared: one core per child
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=REPO, text=True, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ready = False
        self.n = 0

    def start(self, *argv, exit_at: int = 0, no_exchange: bool = False) -> int:
        """Fork a child running `leadline ARGV`; returns its pid."""
        if not self.ready:
            assert self.proc.stdout.readline().strip() == "ready", "the zygote failed to import"
            self.ready = True
        self.n += 1
        self.out, self.err = (self.log_dir / f"child{self.n}.{s}" for s in ("out", "err"))
        self.out.touch()  # a child killed before it opens them has said nothing
        self.err.touch()
        req = {"argv": [str(a) for a in argv], "out": str(self.out), "err": str(self.err), "exit_at": exit_at,
               "no_exchange": no_exchange}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def wait(self) -> subprocess.CompletedProcess:
        """How the last child ended: returncode (-9 for SIGKILL, as subprocess says it), stdout, stderr."""
        code = os.waitstatus_to_exitcode(int(self.proc.stdout.readline()))
        return subprocess.CompletedProcess([], code, self.out.read_text(), self.err.read_text())

    def run(self, *argv, exit_at: int = 0, no_exchange: bool = False) -> subprocess.CompletedProcess:
        self.start(*argv, exit_at=exit_at, no_exchange=no_exchange)
        return self.wait()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def kill_after(z: Zygote, delay: float, *argv: str, when=None) -> int:
    """Start `leadline ARGV`, SIGKILL it `delay` s after the start, or after `when(pid)` first holds; its exit
    code (-9 when the kill came first)."""
    pid = z.start(*argv)
    t0 = time.perf_counter()
    while when is not None and not when(pid) and time.perf_counter() - t0 < 20:
        time.sleep(0.0005)
    time.sleep(max(0.0, delay - (time.perf_counter() - t0) if when is None else delay))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return z.wait().returncode


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- model directories ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    """(old run, new run): `tiny_run` and a copy whose weights differ, so their exports differ byte for byte."""
    import torch

    from leadline.training.export import load_checkpoint

    new = tmp_path_factory.mktemp("atomic") / "new_run"
    new.mkdir()
    ck = load_checkpoint(tiny_run / "best.pt")
    ck["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    torch.save(ck, new / "best.pt")
    return tiny_run, new


def version(model_dir: Path, old: dict, new: dict) -> str:
    """'old' or 'new' when model.onnx and card.json are both of that export; fails on a mix or anything else."""
    onnx_hash = sha(model_dir / "model.onnx")
    card = json.loads((model_dir / "card.json").read_text())["checkpoint"]["path"]
    got = {k for k, v in (("old", old), ("new", new)) if v["onnx"] == onnx_hash and v["card"] == card}
    assert len(got) == 1, f"model.onnx {onnx_hash[:12]} with the card of {card}: a mix of two exports"
    engine.load_model(model_dir)
    return got.pop()


def hidden_inside(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.iterdir() if p.name.startswith("."))


def test_export_killed_at_any_moment_leaves_old_or_new_model(zygote, runs, trained_model, tmp_path):
    old_run, new_run = runs
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    (out / "eval.json").write_text("{}")  # a file of the old directory that an export keeps
    old = {"onnx": sha(out / "model.onnx"), "card": json.loads((out / "card.json").read_text())["checkpoint"]["path"]}
    ref = tmp_path / "reference"
    assert zygote.run("export", new_run, "--out", ref).returncode == 0
    new = {"onnx": sha(ref / "model.onnx"), "card": str(new_run / "best.pt")}
    assert new["onnx"] != old["onnx"]

    temp_dir = lambda pid: any(tmp_path.glob(f".model.{pid}.*"))  # noqa: E731  this child's, not a stale one
    written = lambda pid: any(tmp_path.glob(f".model.{pid}.*/card.json"))  # noqa: E731  about to swap
    seen, finished = [], 0
    cases = ([(d, None) for d in EXPORT_DELAYS] + [(d, temp_dir) for d in (0.0, 0.01, 0.05)]
             + [(d, written) for d in (0.0, 0.0005, 0.001, 0.002)])
    for delay, when in cases:
        code = kill_after(zygote, delay, "export", str(new_run), "--out", str(out), "--force", when=when)
        finished += code == 0
        assert code in (-signal.SIGKILL, 0)
        seen.append(version(out, old, new))
        assert hidden_inside(out) == [] and (out / "eval.json").exists()
        if seen[-1] == "new":  # start again from the old model, so every kill has something to break
            shutil.rmtree(out)
            shutil.copytree(trained_model, out)
            (out / "eval.json").write_text("{}")
    print(f"\n{len(cases)} kills of `leadline export --force`: {seen.count('old')} left the old model, "
          f"{seen.count('new')} the new one ({finished} had finished); leftovers next to it: "
          f"{sorted(p.name for p in tmp_path.iterdir() if p.name.startswith('.'))}")
    assert seen.count("old") >= 3, "no kill landed while the export was writing: the delays need tuning"
    # the next write removes what the killed ones left next to the directory
    assert zygote.run("export", new_run, "--out", out, "--force").returncode == 0
    assert version(out, old, new) == "new" and (out / "eval.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_export_crashing_before_any_file_step_leaves_old_or_new_model(zygote, runs, trained_model, tmp_path,
                                                                      exchange):
    """Deterministic: the child exits just before its 1st, 2nd, ... file move, copy or removal, until one runs to
    the end. Without renameat2 (other systems) one crash point leaves no directory at all, only the old one
    hidden next to it, which the next write puts back first."""
    from leadline.training.export import _clean_stale

    old_run, new_run = runs
    out = tmp_path / "model"
    ref = tmp_path / "reference"
    assert zygote.run("export", new_run, "--out", ref).returncode == 0
    old = {"onnx": sha(trained_model / "model.onnx"), "card": str(old_run / "best.pt")}
    new = {"onnx": sha(ref / "model.onnx"), "card": str(new_run / "best.pt")}
    seen, restored = [], 0
    for k in range(1, 40):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(trained_model, out)
        p = zygote.run("export", new_run, "--out", out, "--force", exit_at=k, no_exchange=not exchange)
        if not out.exists():
            _clean_stale(out)  # what the next write does before anything else
            restored += 1
        seen.append(version(out, old, new))
        assert hidden_inside(out) == []
        if p.returncode == 0:
            break
        assert p.returncode == 137, p.stderr
    print(f"\n{len(seen) - 1} crash points of `leadline export --force` ({'renameat2' if exchange else 'two renames'}"
          f"): {' '.join(seen[:-1])}; {restored} restored from the hidden old copy")
    assert p.returncode == 0 and seen[-1] == "new", seen
    assert seen == sorted(seen, key=("old", "new").index) and seen.count("old") >= 2, seen
    assert restored == (0 if exchange else 1)
    assert zygote.run("export", new_run, "--out", out, "--force").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "reference"]  # nothing stale left


def test_an_existing_model_dir_needs_force(zygote, runs, trained_model, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(trained_model, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    p = zygote.run("export", runs[1], "--out", out)
    assert p.returncode == 1 and "--force" in p.stderr and str(out) in p.stderr and "Traceback" not in p.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_data_build_refuses_a_folder_that_is_not_a_cache(zygote, wjd16, tmp_path):
    out = tmp_path / "songs"
    out.mkdir()
    (out / "my_song.txt").write_text("keep me")
    p = zygote.run("data", "build", "--jobs", "1", "--out", out, wjd16)
    assert p.returncode == 1 and "not a leadline cache" in p.stderr and str(out) in p.stderr
    assert "Traceback" not in p.stderr
    assert [p.name for p in out.iterdir()] == ["my_song.txt"]


# --- checkpoints ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_run(zygote, tiny_cache, tmp_path_factory) -> tuple[Path, Path]:
    """(cache, run dir): one short song per split, so an epoch (and its checkpoint) takes a fraction of a second."""
    from leadline.training import cache

    c = cache.load(tiny_cache)
    seqs = [(c.sequences(s)[0][:n], i, i, 0) for i, (s, n) in enumerate((("train", 300), ("val", 80), ("test", 80)))]
    root = tmp_path_factory.mktemp("quick")
    data = cache.write(cache.from_sequences(seqs, c.manifest), root / "cache")
    settings = [a for s in TINY_DATA + TINY_TRAIN for a in ("--set", s)]
    p = zygote.run("train", "--data", data, "--out", root / "run", *settings)
    assert p.returncode == 0, p.stderr
    return data, root / "run"


def test_train_killed_at_any_moment_leaves_a_checkpoint_that_loads(zygote, quick_run, tmp_path):
    from leadline.training.export import load_checkpoint

    data, run = quick_run[0], tmp_path / "run"
    shutil.copytree(quick_run[1], run)
    argv = ("train", "--data", str(data), "--out", str(run), "--resume", "--set", "train.epochs=10000",
            "--set", "train.patience=1000")
    saving = lambda pid: (run / f".checkpoint.pt.{pid}.tmp").exists()  # noqa: E731  its torch.save under way
    mtime = lambda: (run / "checkpoint.pt").stat().st_mtime_ns  # noqa: E731
    last = mtime()
    saved = lambda pid: mtime() != last  # noqa: E731  a new checkpoint is in place
    steps = [load_checkpoint(run / "checkpoint.pt")["step"]]
    cases = [(d, None) for d in TRAIN_DELAYS] + [(0.0, saved)] + [(d, saving) for d in (0.0, 0.0, 0.001)]
    mid_save = 0
    for delay, when in cases:
        assert kill_after(zygote, delay, *argv, when=when) == -signal.SIGKILL, "the run ended before it was killed"
        mid_save += any(run.glob(".checkpoint.pt.*.tmp"))  # the kill cut a save short: its temporary file is left
        last = mtime()
        steps.append(load_checkpoint(run / "checkpoint.pt")["step"])
        assert steps[-1] >= steps[-2]
    print(f"\n{len(cases)} kills of `leadline train --resume` ({mid_save} during a save): checkpoint.pt loaded "
          f"after each, at steps {steps}")
    assert mid_save >= 1, "no kill landed during a save"
    assert steps[-1] > steps[0], "no checkpoint was written between the kills: the delays need tuning"
    # a resume after the kills removes half-written temporary files and carries on from the last step
    p = zygote.run("train", "--data", data, "--out", run, "--resume", "--set", f"train.max_steps={steps[-1] + 1}")
    assert p.returncode == 0, p.stderr
    assert load_checkpoint(run / "checkpoint.pt")["step"] == steps[-1] + 1
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
