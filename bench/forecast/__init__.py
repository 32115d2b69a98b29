"""Forecast models with FengWu's contract: normalised frames in, the next 6-hour frame out."""

from bench.forecast.base import ForecastModel

__all__ = ["ForecastModel"]
