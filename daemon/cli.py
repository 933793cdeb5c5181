"""The `leadline` command: argument parsing and dispatch to each subcommand's `run(args) -> int`.

Handlers are imported only when their subcommand runs, so `leadline --help` and `leadline serve` never
import torch. An expected error (`UserError`) prints one line and exits 1; a bug keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from leadline.daemon.config import bundled_model
from leadline.daemon.errors import UserError

# subcommand -> "module:function" taking the parsed args and returning an exit code
HANDLERS = {
    "serve": "leadline.daemon.serve:run",
    "ports": "leadline.daemon.ports:run_list",
    "respond": "leadline.daemon.offline:run",
    "replay": "leadline.daemon.replay:run",
    "doctor": "leadline.daemon.doctor:run",
    "plot": "leadline.daemon.plot:run",
    "bench": "leadline.bench.run:run",
    "data": "leadline.training.ingest:run",
    "train": "leadline.training.trainer:run",
    "export": "leadline.training.export:run",
    "eval": "leadline.training.eval:run",
}


def version() -> str:
    """leadline's version from the installed package's metadata."""
    import importlib.metadata

    try:
        return importlib.metadata.version("leadline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


class _Version(argparse.Action):
    """`--version`: looks the version up only when asked (importlib.metadata takes 40 ms to import)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print leadline's version and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"leadline {version()}")
        parser.exit()


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("--config", help="YAML settings file (default: built-in defaults)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one setting for this run, e.g. --set clock.bpm=140 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leadline", description="Real-time MIDI improviser: answers a player "
                                "with lead-guitar lines locked to MIDI clock.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("serve", help="run the live daemon on MIDI ports")
    _common(s)
    s.add_argument("--model", help="model directory (default: engine.model)")
    s.add_argument("--api", choices=["auto", "alsa", "jack", "coremidi", "windows"], help="MIDI backend")
    s.add_argument("--mode", choices=["respond", "trade", "duet"], help="jam mode (default: mode)")
    s.add_argument("--record", metavar="DIR", help="write each session as a .mid (and its session log) under DIR")
    s.add_argument("--learn", action="store_true", help="MIDI learn at start: move a control for temperature, "
                   "mode, on/off and panic in turn (saved to --config)")
    s.add_argument("--duration", type=float, default=0.0, help=argparse.SUPPRESS)  # seconds; tests and bench

    s = sub.add_parser("ports", help="list MIDI input and output ports")
    s.add_argument("--api", choices=["auto", "alsa", "jack", "coremidi", "windows"], default="auto")

    s = sub.add_parser("respond", help="answer a phrase from a MIDI file, offline")
    _common(s)
    s.add_argument("input", help="MIDI file whose lead material is the player's phrase")
    s.add_argument("-o", "--output", required=True, help="MIDI file to write (player + answer, + backing)")
    s.add_argument("--backing", metavar="BACKING.mid", help="the band to play over: its pitched, non-drum tracks, "
                   "on the input's timeline (default: the input's other pitched tracks, if any)")
    s.add_argument("--model", help="model directory (default: engine.model)")
    s.add_argument("--bars", type=int, help="length of the answer in bars (default: respond.bars)")
    s.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    s.add_argument("--png", help="also draw a piano roll PNG")
    s.add_argument("--wav", help="also render audio with FluidSynth")

    s = sub.add_parser("replay", help="feed a take's session log back through the daemon, offline")
    s.add_argument("log", help="a session log (.log beside a recorded take)")
    s.add_argument("--model", help="model directory (default: the one the log names, else the bundled one)")

    s = sub.add_parser("doctor", help="check MIDI backends, onnxruntime providers, model and config")
    _common(s)
    s.add_argument("--model", help="model directory (default: engine.model)")

    s = sub.add_parser("plot", help="draw a piano roll PNG of a .mid file")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)

    s = sub.add_parser("bench", help="measure inference, priming, timing through JACK, ingestion")
    s.add_argument("--model", default=str(bundled_model()), help="model directory (default: the bundled one)")
    s.add_argument("--json", help="write results here (default: bench/results/<machine>.json)")
    s.add_argument("--quick", action="store_true", help="few steps, for the test suite")
    s.add_argument("--only", action="append", default=[], help="run only these sections (repeatable)")

    s = sub.add_parser("data", help="build a training cache from MIDI folders")
    dsub = s.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    b = dsub.add_parser("build", help="ingest MIDI folders into a cache")
    _common(b)
    b.add_argument("sources", nargs="+", metavar="SRC", help="MIDI files or folders (searched recursively)")
    b.add_argument("--out", required=True, help="cache directory to write")
    b.add_argument("--jobs", type=int, default=0, help="worker processes (default: every core)")
    b.add_argument("--shard", metavar="K/N", help="ingest only the K-th of N slices of the file list (K from 0), "
                   "into a shard folder for `leadline data merge`: one slice per machine")
    m = dsub.add_parser("merge", help="join the shards of `data build --shard K/N` into one cache")
    m.add_argument("shards", nargs="+", metavar="SHARD", help="the N shard folders")
    m.add_argument("--out", required=True, help="cache directory to write")

    s = sub.add_parser("train", help="train the LSTM on a cache")
    _common(s)
    s.add_argument("--data", required=True, help="cache directory from `leadline data build`")
    s.add_argument("--out", required=True, help="run directory (checkpoints, metrics, loss curve)")
    s.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    s.add_argument("--init", metavar="MODEL_DIR", help="start a new run from the weights of an exported model "
                   "(e.g. models/default): fine-tuning on new data or for more steps")

    s = sub.add_parser("export", help="export a trained run to an ONNX model directory")
    s.add_argument("run_dir")
    s.add_argument("--out", required=True, help="model directory to write")
    s.add_argument("--force", action="store_true", help="replace an existing model directory")

    s = sub.add_parser("eval", help="evaluate a model against unigram and Markov baselines")
    _common(s)
    s.add_argument("--model", required=True)
    s.add_argument("--data", nargs="+", required=True, help="cache directory or MIDI folders")
    s.add_argument("--train-data", nargs="+", help="training corpus for the baselines (default: from the "
                   "model card)")
    s.add_argument("--split", default="test", help="split of a cache to evaluate (default: test)")
    s.add_argument("--json", help="also write the report as JSON here")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--phrases", type=int, default=100, help="seed phrases to continue for the generation "
                   "measures (default: 100)")
    s.add_argument("--corpus", help="evaluate only this corpus (a source folder, e.g. rock-o-net); the realness "
                   "judge trains on its validation cuts")
    s.add_argument("--lead-only", action="store_true", help="only the lead section (lead statistics, judge, "
                   "quoting): no bits/event, baselines or overlap areas")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose + 1, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module, func = HANDLERS[args.command].split(":")
    try:
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except UserError as e:
        print(f"leadline {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except ModuleNotFoundError as e:
        if e.name in ("torch", "onnx", "onnxscript", "symusic", "tqdm", "matplotlib"):
            print(f"leadline {args.command}: needs {e.name}; install the training extra: "
                  f"pip install -e '.[train]'", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
