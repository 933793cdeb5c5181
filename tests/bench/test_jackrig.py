"""The JACK rig's verdict helpers, without JACK: what is retried, what skips, what fails."""
from __future__ import annotations

import pytest

from leadline.bench.jackrig import RigStalled, again_if_stalled


def test_a_stalled_measurement_is_measured_again():
    tries = []

    def measure():
        tries.append(1)
        if len(tries) == 1:
            raise RigStalled("the graph stalled")
        return "measured"

    assert again_if_stalled(measure) == "measured" and len(tries) == 2


def test_a_rig_that_keeps_stalling_is_a_rig_skip_and_a_wrong_leadline_fails_at_once():
    def stalls():
        raise RigStalled("again")

    with pytest.raises(RigStalled):
        again_if_stalled(stalls)
    tries = []

    def wrong():
        tries.append(1)
        raise AssertionError("leadline off the tick")

    with pytest.raises(AssertionError):
        again_if_stalled(wrong)
    assert len(tries) == 1
