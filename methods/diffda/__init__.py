"""DiffDA: data assimilation by a forecast-conditioned diffusion model.

method.py (the method: fit → load, its cost hooks), analysis.py (the analyser: sampling),
denoiser.py, sampler.py, mask.py (the soft mask on the shared neighbour search), train.py.
"""

from methods.diffda.analysis import DiffDAAnalyser
from methods.diffda.method import DiffDA

__all__ = ["DiffDA", "DiffDAAnalyser"]
