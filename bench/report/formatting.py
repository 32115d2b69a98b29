"""Numbers and units as the tables and figures show them (display only; the CSV keeps full
precision and the Dataset's SI units).

A mean shows 3 significant digits and its σ the same decimal places, so "152 ± 23" and
"0.412 ± 0.051"; magnitudes below 1e-3 fall back to scientific notation. Specific humidity
(stored in kg kg⁻¹, errors ~1e-4) is shown in g kg⁻¹ so it reads as "0.412 ± 0.051"
(``DISPLAY_UNITS``). Durations get a readable unit ("51.2 ms"). Text bound for LaTeX goes
through ``latex_escape``.
"""

from __future__ import annotations

import math
import re

import xarray as xr

#: Significant digits of a displayed mean.
SIGNIFICANT = 3
#: Stored units -> (displayed units, factor from stored to displayed).
DISPLAY_UNITS: dict[str, tuple[str, float]] = {"kg kg-1": ("g kg-1", 1e3)}
#: What a cell shows where a number does not apply (a deterministic method's spread).
NOT_APPLICABLE = "—"

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "µ": r"$\mu$", "σ": r"$\sigma$", NOT_APPLICABLE: "---", "†": r"$^\dagger$",
    "−": "$-$", "χ": r"$\chi$", "φ": r"$\phi$", "√": r"$\surd$", "≥": r"$\geq$",
}
_SUPERSCRIPTS = "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"
_PLAIN = str.maketrans(_SUPERSCRIPTS, "-0123456789")


# ----------------------------------------------------------------------------- units

def channel_units(ds: xr.Dataset, channel: str) -> str:
    """A channel's stored units (the ``units`` coordinate of metrics.nc), e.g. "m2 s-2"."""
    return str(ds["units"].sel(channel=channel).values)


def display_units(units: str) -> tuple[str, float]:
    """Stored units -> (units shown in tables and figures, factor to multiply values by)."""
    return DISPLAY_UNITS.get(units, (units, 1.0))


def pretty_units(units: str, style: str = "unicode") -> str:
    """CF/udunits spelling -> readable: "m2 s-2" -> "m² s⁻²" (unicode) or "m$^{2}$ s$^{-2}$"."""
    def power(match: re.Match) -> str:
        base, exp = match.group(1), match.group(2)
        if style == "latex":
            return f"{base}$^{{{exp}}}$"
        return base + exp.translate(_SUPERSCRIPT)

    if style not in ("unicode", "latex"):
        raise ValueError(f"unknown units style {style!r}; valid: 'unicode', 'latex'")
    return re.sub(r"([A-Za-z]+)(-?\d+)", power, units)


def units_label(ds: xr.Dataset, channel: str, style: str = "unicode") -> str:
    """"[m² s⁻²]": a channel's displayed units, bracketed for a header or axis label."""
    return f"[{pretty_units(display_units(channel_units(ds, channel))[0], style)}]"


def channel_label(ds: xr.Dataset, channel: str, style: str = "unicode") -> str:
    """"z500 [m² s⁻²]": the channel with its displayed units."""
    return f"{channel} {units_label(ds, channel, style)}"


def display_scale(ds: xr.Dataset, channel: str) -> float:
    """The factor from a channel's stored to its displayed units (1e3 for kg kg⁻¹)."""
    return display_units(channel_units(ds, channel))[1]


# ----------------------------------------------------------------------------- numbers

def _decimals(x: float, digits: int) -> int:
    """Decimal places that show ``digits`` significant digits of ``x`` (never negative)."""
    if x == 0 or not math.isfinite(x):
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(x))))


def format_number(x: float, digits: int = SIGNIFICANT) -> str:
    """3 significant digits without exponent ("1234", "23.4", "0.0512"); "n/a" for NaN."""
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{_decimals(x, digits)}f}"


def format_mean_std(mean: float, std: float, digits: int = SIGNIFICANT) -> str:
    """"152 ± 23": the mean with ``digits`` significant digits, σ with the same decimals."""
    if not math.isfinite(mean):
        return "n/a"
    if mean != 0 and abs(mean) < 1e-3:
        return f"{mean:.{digits - 1}e} ± {std:.1e}"
    d = _decimals(mean, digits)
    return f"{mean:.{d}f} ± {std:.{d}f}"


def format_seconds(seconds: float) -> str:
    """A duration with a readable unit: "512 µs", "51.2 ms", "2.13 s", "1234 s"."""
    if not math.isfinite(seconds):
        return "n/a"
    unit, scale = next(((u, f) for u, f in (("s", 1.0), ("ms", 1e-3)) if seconds >= f),
                       ("µs", 1e-6))
    return f"{format_number(seconds / scale)} {unit}"


def format_count(x: float) -> str:
    """A count: "20", or "20.5" for a median between two counts; "n/a" for NaN."""
    if not math.isfinite(x):
        return "n/a"
    return f"{int(x)}" if float(x).is_integer() else f"{x:.1f}"


def format_columns(columns: float) -> str:
    """Observed columns per cycle: "20" ("20.5": elements sampling's equivalent); "—" when
    unknown (NaN)."""
    return NOT_APPLICABLE if not math.isfinite(columns) else format_count(round(columns, 1))


def format_km(km: float) -> str:
    """A spacing in whole km: "4861"; "—" when unknown (NaN)."""
    return NOT_APPLICABLE if not math.isfinite(km) else f"{km:.0f}"


def format_density(density: float) -> str:
    """An observation density as its row label shows it: "0.01"."""
    return f"{density:g}"


# ----------------------------------------------------------------------------- text

def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; ±, µ, σ, †, −, χ, φ, √, ≥ and superscripts ("s⁻²")
    become math ("s$^{-2}$"), — becomes ---."""
    parts = re.split(f"([{_SUPERSCRIPTS}]+)", text)
    return "".join(
        f"$^{{{part.translate(_PLAIN)}}}$" if i % 2 else
        "".join(_LATEX_SPECIAL.get(c, c) for c in part) for i, part in enumerate(parts))


def diverged_text(cycle: int) -> str:
    return f"diverged (cycle {cycle})"
