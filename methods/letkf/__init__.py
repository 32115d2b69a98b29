"""LETKF: the local ensemble transform Kalman filter (Hunt, Kostelich & Szunyogh 2007).

method.py (the method: its settings, fit → load, its cost hooks; the method's description and
validation tables in its docstring), analysis.py (the analyser: the batched local ETKF),
additive.py (additive inflation: the pool of 6-hour forecast errors and its draws).
"""

from methods.letkf.analysis import LETKFAnalyser
from methods.letkf.method import LETKF

__all__ = ["LETKF", "LETKFAnalyser"]
