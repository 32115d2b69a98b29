"""3DVar: variational analysis with a balanced spectral background-error covariance.

method.py (the method: fit → load → analyse, its cost hooks), solvers.py (the cost, L-BFGS and
conjugate gradients). The covariance model B = U Uᵀ and its statistics live in
methods/common/covariance (shared with future 4DVar and hybrid methods).
"""

from methods.threedvar.method import ThreeDVar, ThreeDVarAnalyser

__all__ = ["ThreeDVar", "ThreeDVarAnalyser"]
