"""Hybrid 3DEnVar (Lorenc 2003; Buehner 2005): 3DVar's static B plus a localised ensemble
covariance in one variational analysis; the LETKF's members recentred on it.

method.py (the method: its settings, fit → load, its cost hooks; the description in its
docstring), cost.py (the control-variable transform G, the localisation square root Λ, J and
the CG solve), analysis.py (the analyser: LETKF members, the variational mean, recentring).
"""

from methods.envar.analysis import EnVarAnalyser
from methods.envar.method import EnVar

__all__ = ["EnVar", "EnVarAnalyser"]
