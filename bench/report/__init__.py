"""Results -> paper tables, figures and sweep comparisons (pure functions of metrics.nc, whose
schema bench/scorer.py owns).

tables (writes every table file) · skill, timing (the two full tables) · paper (compact tables
for a paper) · paired (each method against the best, per-cycle paired differences) ·
diagnostics (O − B, O − A, Desroziers, χ²/N) · impact (free forecasts: analysis age, lead time
gained) · pooling (RMSE conventions, the normalised channel mean, per-cycle series) · statistics
(intervals of a mean over autocorrelated cycles) · selection (rows, channels, spin-up,
ensembles) · formatting (numbers and units as shown) · render (Markdown, LaTeX, CSV text) ·
plots, diagnostic_plots, figure_style (figures) · compare (several runs in one table).
"""
