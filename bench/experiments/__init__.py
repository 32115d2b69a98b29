"""Experiments beside the cycling grid: one-analysis checks, single observations, timing."""
