"""The method contract (DESIGN.md §3): what every assimilation method sees and provides.

Everything a method learns comes through ``fit(ctx)`` (training period only); everything it
sees at analysis time comes through the two arguments of ``analyse(background, obs)``;
everything the harness learns about it comes from the returned ``Analysis``, the timer around
``analyse`` and the cost hooks (``untrained``, ``memory_estimate``, ``dominant_kernel``).
Methods never compute skill.

All tensors are normalised with the world's StateSpec (x_norm = (x − mean_c) / std_c): states
are ``(C, H, W)`` float32, observations and their error std are in the same normalised units
of their channel.
"""

from methods.base.assimilator import Analyser, Assimilator, FittedState, TrainingContext
from methods.base.costs import Kernel, MemoryEstimate
from methods.base.observations import DifferentiableModel, Observations, ObservationWindow
from methods.base.states import STANDARD_DIAGNOSTICS, Analysis, Background

__all__ = ["STANDARD_DIAGNOSTICS", "Analyser", "Analysis", "Assimilator", "Background",
           "DifferentiableModel", "FittedState", "Kernel", "MemoryEstimate", "ObservationWindow",
           "Observations", "TrainingContext"]
