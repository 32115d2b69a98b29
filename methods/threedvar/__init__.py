"""3DVar: variational analysis with a balanced spectral background-error covariance.

b_matrix.py (U = U_p U_v S U_h and its adjoint), statistics.py (estimating U's statistics from
NMC samples), spectral.py (SHTs), method.py (the cost and its minimisation).
"""

from methods.threedvar.method import ThreeDVar

__all__ = ["ThreeDVar"]
