"""VAE-Var: variational assimilation with a background term learnt by a VAE.

method.py (the method: fit → load, its cost hooks), analysis.py (the analyser: J and L-BFGS in
the latent space), vae.py (the network), train.py (training it).
"""

from methods.vaevar.analysis import VAEVarAnalyser
from methods.vaevar.method import VAEVar

__all__ = ["VAEVar", "VAEVarAnalyser"]
