"""Results -> paper tables, figures and sweep comparisons (pure functions of metrics.nc, whose
schema bench/scorer.py owns).

tables (writes every table file) · skill, timing (the two tables) · selection (rows, channels,
spin-up, ensembles) · formatting (numbers and units as shown) · render (Markdown, LaTeX, CSV
text) · plots (figures) · compare (several runs in one table).
"""
