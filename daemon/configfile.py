"""Changing settings in a config file by hand's-width edits: comments, order and spacing stay as written.

`set_values(path, "control", {"temperature_cc": 30})` rewrites only the value on the key's line (its
comment keeps its column), adds a missing key under its section or a missing section at the end, checks
that the result reads back to the values asked for, and replaces the file atomically (temporary file in
the same folder + rename, the file's mode kept). A YAML library round trip was the other way: PyYAML
drops comments, and ruamel.yaml keeps them but is one more dependency for a daemon and re-indents
what it re-emits; a block-style settings file like config.yaml needs no more than this.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
from pathlib import Path

import yaml

from leadline.daemon.config import ConfigError

_LOCK = threading.Lock()  # saves from the writer threads one at a time


def _text(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _section(lines: list[str], section: str) -> tuple[int, int] | None:
    """(header line, end) of a top-level block section; None when absent; ConfigError when not a block."""
    for i, line in enumerate(lines):
        m = re.match(rf"{re.escape(section)}\s*:(.*)$", line)
        if not m:
            continue
        if m.group(1).split("#", 1)[0].strip():
            raise ConfigError(f"{section}: is written inline in the config file; write it as a block "
                              f"(one key a line) to let leadline change it")
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
            end += 1
        while end > i + 1 and (not lines[end - 1].strip() or lines[end - 1][0] == "#"):
            end -= 1
        return i, end
    return None


def _set_line(line: str, key: str, value) -> str:
    m = re.match(rf"(\s+{re.escape(key)}\s*:\s*)([^#]*?)(\s*)(#.*)?$", line)
    head, old, gap, comment = m.group(1), m.group(2), m.group(3), m.group(4)
    new = _text(value)
    if comment is None:
        return head + new
    gap = " " * max(1, len(old) + len(gap) - len(new))  # the comment keeps its column where it can
    return head + new + gap + comment


def edit(text: str, section: str, values: dict) -> str:
    """`text` with `section.key: value` set for each of `values`."""
    lines = text.splitlines()
    where = _section(lines, section)
    if where is None:
        lines += ["", f"{section}:"]
        where = (len(lines) - 1, len(lines))
    start, end = where
    indent = "  "
    for key, value in values.items():
        pat = re.compile(rf"\s+{re.escape(key)}\s*:")
        hit = [i for i in range(start + 1, end) if pat.match(lines[i])]
        if hit:
            lines[hit[0]] = _set_line(lines[hit[0]], key, value)
            continue
        keyed = [lines[i] for i in range(start + 1, end) if re.match(r"\s+\w+\s*:", lines[i])]
        if keyed:
            indent = re.match(r"\s+", keyed[0]).group(0)
        lines.insert(end, f"{indent}{key}: {_text(value)}")
        end += 1
    return "\n".join(lines) + "\n"


def set_values(path: str | Path, section: str, values: dict) -> None:
    """Set `section.key: value` for each of `values` in the YAML file at `path`; ConfigError on failure."""
    path = Path(path)
    with _LOCK:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        new = edit(text, section, values)
        got = (yaml.safe_load(new) or {}).get(section) or {}
        if any(got.get(k, object()) != v for k, v in values.items()):
            raise ConfigError(f"config file {path}: could not set {section}.{', '.join(values)} by editing "
                              "lines (write that section as one key a line)")
        _replace(path, new)


def _replace(path: Path, text: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
