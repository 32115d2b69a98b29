"""Parts several methods share and no method owns (DESIGN.md §3).

    sphere.py       spherical padding and 3×3 convolutions on the lat-lon grid (``sphere_pad``,
                    ``SphereConv``): the VAE of VAE-Var and the built-in emulator
    neighbours.py   great-circle neighbour search (scikit-learn's haversine BallTree) and
                    Gaussian observation-kernel sums: interp, DiffDA's mask, later LETKF's
                    localisation
    spectral.py     spherical-harmonic transforms with the truncation of ``StateSpec``
                    (``Transforms``: scalars and winds from ψ, χ; ``TriangularTruncation``)
    covariance/     the static covariance model B = U Uᵀ (3DVar's control-variable transform)
                    and its statistics (NMC estimation, synthetic statistics for timing)
    memory.py       activation bytes of a network on the meta device (memory estimates)
    krylov.py       conjugate gradients on a Hessian given as a product (3DVar, 4DVar)

It imports only ``methods.base``, ``bench.state`` and libraries, never a method.
"""
