"""Music names: note names with octaves ('E2'), pitch classes, keys and their scales."""
from __future__ import annotations

_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "ionian": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10), "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10), "lydian": (0, 2, 4, 6, 7, 9, 11),
    "pentatonic": (0, 3, 5, 7, 10), "minor pentatonic": (0, 3, 5, 7, 10),
    "major pentatonic": (0, 2, 4, 7, 9), "blues": (0, 3, 5, 6, 7, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
}


def pitch_class(name: str) -> int:
    """'E' -> 4, 'F#' -> 6, 'Bb' -> 10."""
    if not name or name[0].upper() not in _PC:
        raise ValueError(f"not a note name: {name!r}")
    pc = _PC[name[0].upper()]
    for acc in name[1:]:
        if acc == "#":
            pc += 1
        elif acc == "b":
            pc -= 1
        else:
            raise ValueError(f"not a note name: {name!r}")
    return pc % 12


def note_number(name: str | int) -> int:
    """'E2' -> 40, 'C4' -> 60 (middle C); an int passes through if it is 0..127."""
    if isinstance(name, int):
        if not 0 <= name <= 127:
            raise ValueError("MIDI note numbers are 0..127")
        return name
    s = str(name).strip()
    i = len(s)
    while i > 0 and (s[i - 1].isdigit() or s[i - 1] == "-"):
        i -= 1
    if i == len(s):
        raise ValueError("expected a note name with octave, like E2")
    n = 12 * (int(s[i:]) + 1) + pitch_class(s[:i])
    if not 0 <= n <= 127:
        raise ValueError("outside MIDI notes 0..127")
    return n


def parse_key(text: str) -> tuple[int, tuple[int, ...]]:
    """'E minor' -> (4, minor scale intervals)."""
    parts = text.strip().split(None, 1)
    if len(parts) != 2 or parts[1].lower() not in SCALES:
        raise ValueError(f"expected '<tonic> <scale>' with scale one of {', '.join(sorted(SCALES))}")
    return pitch_class(parts[0]), SCALES[parts[1].lower()]
