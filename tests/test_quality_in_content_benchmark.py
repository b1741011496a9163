"""benchmarks/quality_in_content: the quality probe against cases whose answer is known."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quality_in_content import probe_r2  # noqa: E402


def test_probe_recovers_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 16))
    y = x @ rng.standard_normal(16)
    assert probe_r2(x, y) > 0.99
    assert probe_r2(x, y + 1.0 * np.std(y) * rng.standard_normal(600)) == pytest.approx(0.5, abs=0.1)
    assert abs(probe_r2(x, rng.standard_normal(600))) < 0.05
