"""`leadline bench --quick` on the tiny model: every inference section runs and its JSON keys are there."""
from __future__ import annotations

import json

import pytest

from leadline.bench import run as bench
from leadline.daemon.cli import main

INFERENCE = ("step", "windowed", "priming", "candidates")


def test_bench_quick_writes_json(tiny_model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_model.path), "--json", str(out), "--quick",
                 *[a for s in INFERENCE for a in ("--only", s)]]) == 0
    report = json.loads(out.read_text())
    keys = {"hostname", "cpu", "cores", "gpu", "python", "onnxruntime", "numpy", "date"}
    assert keys <= set(report["machine"])
    assert report["quick"] is True and report["model"]["hidden"] == 32
    sec = report["sections"]
    assert set(INFERENCE) <= set(sec)
    for name in ("cpu_1_thread", "cpu_default_threads"):
        assert {"p50_ms", "p99_ms", "max_ms", "n"} <= set(sec["step"][name])
        assert sec["step"][name]["n"] == 200
    for name in ("cuda_iobinding", "cuda_graph"):
        assert "p50_ms" in sec["step"][name] or "skipped" in sec["step"][name]
    assert "ratio_p50" in sec["windowed"]["cpu_1_thread"]
    assert "speedup_p50" in sec["priming"]["cpu_1_thread"]
    assert "per_candidate_us" in sec["candidates"]["cpu_1_thread_b16"]
    assert "per_candidate_us" in sec["candidates"]["cpu_1_thread_b256"]
    printed = capsys.readouterr().out
    assert "step.cpu_1_thread" in printed and "written:" in printed


def test_bench_merges_only_sections(tiny_model, tmp_path):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"sections": {"jack": {"x": 1}}}))
    args = ["bench", "--model", str(tiny_model.path), "--json", str(out), "--quick", "--only", "priming"]
    assert main(args) == 0
    assert set(json.loads(out.read_text())["sections"]) == {"jack", "priming"}


def test_unknown_section_is_user_error(tiny_model, tmp_path, capsys):
    assert main(["bench", "--model", str(tiny_model.path), "--json", str(tmp_path / "x.json"),
                 "--only", "nope"]) == 1
    assert "unknown section" in capsys.readouterr().err


def test_sections_registry_is_extensible():
    assert list(bench.SECTIONS)[:4] == list(INFERENCE)

    @bench.section("extra_test_section")
    def extra(b):
        return {"value": 1}

    try:
        assert bench.SECTIONS["extra_test_section"] is extra
    finally:
        del bench.SECTIONS["extra_test_section"]


def test_missing_model_is_user_error(tmp_path, capsys):
    assert main(["bench", "--model", str(tmp_path / "none"), "--json", str(tmp_path / "x.json"),
                 "--quick", "--only", "step"]) == 1
    assert "no such model directory" in capsys.readouterr().err


@pytest.mark.parametrize("ns", [[1_000_000, 2_000_000, 3_000_000]])
def test_stats(ns):
    s = bench.stats(ns)
    assert s["p50_ms"] == 2.0 and s["max_ms"] == 3.0 and s["n"] == 3


def test_bench_jam_counts_the_jam_targets(tiny_model, tmp_path):
    """The "jam" section (bench/jam.py) runs its scenarios over the quick seeds and reports every count."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_model.path), "--json", str(out), "--quick", "--only", "jam"]) == 0
    jam = json.loads(out.read_text())["sections"]["jam"]
    assert jam["seeds"] == 3 and jam["duet"]["bars"] == 24 and jam["trade"]["turns"] == 48, jam
    assert jam["respond_after_lost_note_off"]["phrases"] == 6 and "silent_bars" in jam["duet"], jam


def test_bench_echo_times_steps_with_the_session_memorys_mix_off_and_on(tiny_model, tmp_path):
    """The "echo" section (bench/echo.py): a generation step at each weight, where the memory spoke, the mix
    alone."""
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_model.path), "--json", str(out), "--quick", "--only", "echo"]) == 0
    echo = json.loads(out.read_text())["sections"]["echo"]
    for w in ("0.0", "0.3", "1.0"):
        assert {"p50_ms", "p99_ms", "n", "mixed_share"} <= set(echo[f"step_echo_{w}"]), echo
        assert echo[f"step_echo_{w}"]["n"] == 200
    assert echo["step_echo_0.0"]["mixed_share"] == 0.0 and 0.0 <= echo["step_echo_1.0"]["mixed_share"] <= 1.0, echo
    assert echo["mix_alone"]["p50_ms"] > 0 and echo["hear_one_note"]["p50_ms"] > 0 and echo["memory"]["tokens"] == 4096
