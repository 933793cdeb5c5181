"""The layout shows the architecture: what runs on stage (daemon/) imports neither torch, nor the offline side
(training/), nor the benchmarks and test rig (bench/); training imports the daemon's codec, never the reverse."""
from __future__ import annotations

import ast

from tests.conftest import REPO

OFFSTAGE = ("torch", "onnx", "leadline.training", "leadline.bench", "training", "bench")


def imported(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_daemon_imports_nothing_offstage():
    files = sorted((REPO / "daemon").glob("*.py"))
    assert len(files) > 15
    found = {f.name: sorted(n for n in imported(f) if any(n == o or n.startswith(o + ".") for o in OFFSTAGE))
             for f in files}
    assert not {k: v for k, v in found.items() if v}, "the daemon reaches off stage"


def test_the_check_sees_an_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import numpy\nfrom leadline.training.model import LeadLSTM\n")
    assert imported(f) == {"numpy", "leadline.training.model"}
