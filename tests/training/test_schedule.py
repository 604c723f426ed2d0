"""The learning-rate schedules (training.schedule) at the steps that matter, values worked out by hand."""
import pytest

from convnet.training.schedule import lr_factor

# 10 optimizer steps (0..9), the first 4 of them warm-up.
TOTAL, WARMUP = 10, 4


@pytest.mark.parametrize("kind", ["constant", "linear"])
def test_warm_up_rises_in_equal_steps_to_the_peak(kind):
    # Step s of the warm-up runs at (s + 1) / 4 of the peak: never at 0, the peak on its last step.
    assert [lr_factor(s, TOTAL, WARMUP, kind) for s in range(WARMUP)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_constant_stays_at_the_peak_after_warm_up():
    assert [lr_factor(s, TOTAL, WARMUP, "constant") for s in (4, 7, 9)] == [1.0, 1.0, 1.0]
    assert lr_factor(0, TOTAL, 0, "constant") == 1.0


def test_linear_falls_from_the_peak_at_the_warm_up_end_towards_0_at_total_steps():
    # After the warm-up: a line through (4, 1) and (10, 0), i.e. (10 - s) / 6.
    got = {s: lr_factor(s, TOTAL, WARMUP, "linear") for s in (4, 5, 7, 9)}
    assert got == pytest.approx({4: 1.0, 5: 5 / 6, 7: 0.5, 9: 1 / 6})
    assert lr_factor(TOTAL, TOTAL, WARMUP, "linear") == 0.0


def test_linear_without_warm_up_starts_at_the_peak():
    # A line through (0, 1) and (10, 0): (10 - s) / 10.
    got = [lr_factor(s, TOTAL, 0, "linear") for s in (0, 5, 9)]
    assert got == pytest.approx([1.0, 0.5, 0.1])


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="cosine"):
        lr_factor(5, TOTAL, WARMUP, "cosine")
