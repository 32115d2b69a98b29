"""4DVar: strong-constraint incremental 4DVar through the forecast model's autograd.

method.py (the method: fit → load → analyse, its cost hooks, the Gauss–Newton outer loops),
cost.py (J over the window, its gradient, the tangent-linear and adjoint by autograd). The
covariance model B = U Uᵀ is 3DVar's (methods/common/covariance); conjugate gradients are
methods/common/krylov.py.
"""

from methods.fourdvar.method import FourDVar, FourDVarAnalyser

__all__ = ["FourDVar", "FourDVarAnalyser"]
