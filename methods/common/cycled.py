"""Training on the errors of cycled backgrounds: the fields VAE-Var and DiffDA share.

``training_samples = "cycled_background"`` makes a method learn from d = x_true − x_b of the 6 h
backgrounds of another method cycled through the training period (bench/cycled_samples.py),
instead of forecasts from truth, whose errors are 3–8 × smaller than those it meets when it
cycles itself. The two fields say which method cycles (a registered name; it runs with its
defaults) and at which observation density; set the density to the run's.

Measured (built-in world, 3DVar at 1 %, results/cycled-training/): the errors are 7.7 × the 6 h
truth − forecast errors. VAE-Var trained on them needs a larger λ: with λ = 4000 it cycles
worse than no assimilation (test 0.827 vs 0.774), with λ = 16000 chosen on the validation period
better than its default in 2 of 3 seeds (0.715 vs 0.741, not significant). DiffDA diverges
earlier with them at 1 % (cycle 20 vs 33) and is unchanged at 5 %.
"""

from __future__ import annotations

#: the cycling method and density when not set: 3DVar, the method that cycles stably at every
#: density on the built-in world; 1 %, README's main density
CYCLED_METHOD = "3dvar"
CYCLED_DENSITY = 0.01


def cycled_checks(method: str, density: float) -> tuple:
    """``Assimilator.check_fields`` rows for the fields ``cycled_method`` and
    ``cycled_density``."""
    # the registry, imported here: this module loads while the registry itself is loading
    from methods import METHODS

    # the sample loop hands over one background and one time's observations: deterministic,
    # 3D methods only (bench/setup.cycling_method refuses the others again, for any caller)
    deterministic_3d = [name for name, cls in METHODS.items()
                        if not cls.members and not cls.window_hours]
    return (
        ("cycled_method", isinstance(method, str) and method in deterministic_3d,
         f"a registered deterministic 3D method ({', '.join(deterministic_3d)})"),
        ("cycled_density", isinstance(density, (int, float)) and 0 < density <= 1,
         "a fraction of grid columns in (0, 1], e.g. the run's --density"),
    )


def cycled_settings(method: str, density: float) -> dict:
    """The ``TrainingContext.samples`` settings naming the cycling method and its density."""
    return {"method": method, "density": float(density)}
