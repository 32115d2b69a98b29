"""Results -> paper tables, figures and sweep comparisons (pure functions of metrics.nc)."""
