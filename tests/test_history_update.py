"""How an analysis enters the forecast model's two input frames (CycleSettings.history_update)."""

import pytest
import torch

from bench.config import CycleSettings
from bench.cycle import updated_history
from bench.validation import ConfigError


def _frames():
    g = torch.Generator().manual_seed(0)
    history = torch.randn(2, 3, 4, 8, generator=g)
    x_a = history[-1] + torch.randn(3, 4, 8, generator=g)
    return history, x_a


def test_increment_adds_the_analysis_increment_to_every_frame():
    history, x_a = _frames()
    new = updated_history(history, history[-1], x_a, "increment")
    torch.testing.assert_close(new[-1], x_a)
    # the model's tendency between its input frames is the background's, untouched
    torch.testing.assert_close(new[1] - new[0], history[1] - history[0])


def test_replace_changes_only_the_last_frame():
    history, x_a = _frames()
    new = updated_history(history, history[-1], x_a, "replace")
    torch.testing.assert_close(new[-1], x_a)
    torch.testing.assert_close(new[0], history[0])


def test_a_zero_increment_leaves_the_history_alone_under_both_policies():
    history, _ = _frames()
    for policy in ("increment", "replace"):
        torch.testing.assert_close(updated_history(history, history[-1], history[-1], policy),
                                   history)


def test_an_unknown_policy_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match="history_update = 'shift'.*one of increment, replace"):
        CycleSettings(history_update="shift")
    with pytest.raises(ConfigError, match="cycle.history_update = 'shift'"):
        updated_history(*_frames()[:1], _frames()[0][-1], _frames()[1], "shift")


def test_every_member_gets_its_own_increment():
    """An ensemble's frames (N, history, C, H, W) each take their member's increment."""
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(3, 2, 2, 4, 8, generator=g)
    x_a = frames[:, -1] + torch.randn(3, 2, 4, 8, generator=g)
    new = updated_history(frames, frames[:, -1], x_a, "increment")
    for i in range(3):
        torch.testing.assert_close(new[i], updated_history(frames[i], frames[i, -1], x_a[i],
                                                           "increment"))
