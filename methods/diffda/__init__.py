"""DiffDA: data assimilation by a forecast-conditioned diffusion model (method.py)."""

from methods.diffda.method import DiffDA

__all__ = ["DiffDA"]
