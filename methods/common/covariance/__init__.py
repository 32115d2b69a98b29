"""The static background-error covariance model B = U Uᵀ (3DVar's; for 4DVar and hybrids too).

    bmatrix.py      layout (control variables of a spec) and BMatrix: U = U_p U_v S U_h, Uᵀ
    legendre.py     U_h's synthesis and U_p's winds in real arithmetic, hand-written adjoints
    statistics.py   estimating U's statistics from NMC samples (``estimate``)
    synthetic.py    statistics of the right shapes without samples (``synthetic_statistics``)

The statistics are a plain dict of float64 CPU tensors (see ``statistics.estimate``): what a
method's ``fit`` returns and its ``load`` hands to ``BMatrix(spec, stats, device)``.
"""

from methods.common.covariance.bmatrix import BMatrix, Group, layout
from methods.common.covariance.statistics import estimate
from methods.common.covariance.synthetic import synthetic_statistics

__all__ = ["BMatrix", "Group", "estimate", "layout", "synthetic_statistics"]
