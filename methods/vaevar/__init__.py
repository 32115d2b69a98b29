"""VAE-Var: variational assimilation with a background term learnt by a VAE (method.py)."""

from methods.vaevar.method import VAEVar

__all__ = ["VAEVar"]
