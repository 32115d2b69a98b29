"""Results on disk. Only this module writes results files (DESIGN.md §2).

Every table is written as Markdown (with the exact command that made it), CSV and LaTeX, each
first to a temporary file and then renamed, so a crash never leaves a half-written table.
"""

from __future__ import annotations

import os
import shlex
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _temporary(path: Path) -> Path:
    """A sibling temporary name unique to this process and call, so two writers of the same
    file (a cell retried on another Dask worker while the first still runs) never share one."""
    return path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def command_line() -> str:
    """The command that is running, as a user would type it."""
    args = sys.argv[1:]
    prog = "python -m bench" if sys.argv and sys.argv[0].endswith(("bench", "__main__.py")) \
        else Path(sys.argv[0]).name
    return " ".join([prog, *map(shlex.quote, args)])


def _atomic_write(path: Path, text: str) -> None:
    tmp = _temporary(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    # newline="" so the bytes do not depend on the platform: regenerated tables stay identical.
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save a matplotlib figure to ``path`` atomically; the format is the file's suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    # The temporary name hides the suffix from matplotlib, so name the format explicitly.
    fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def write_table(
    table: pd.DataFrame, directory: str | Path, stem: str, title: str, command: str,
    notes: str = "",
) -> list[Path]:
    """Write ``table`` as ``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex`` in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    md = f"# {title}\n\nMade by:\n\n```bash\n{command}\n```\n\n"
    if notes:
        md += notes.strip() + "\n\n"
    md += table.to_markdown(index=False, floatfmt=".4g") + "\n"
    paths = [directory / f"{stem}.md", directory / f"{stem}.csv", directory / f"{stem}.tex"]
    _atomic_write(paths[0], md)
    _atomic_write(paths[1], f"# {command}\n" + table.to_csv(index=False))
    _atomic_write(paths[2], f"% {command}\n" + table.to_latex(index=False, float_format="%.4g"))
    return paths


# ----------------------------------------------------------------------------- run directories
def write_json(path: str | Path, text: str) -> Path:
    """Write a JSON text atomically (config.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, text if text.endswith("\n") else text + "\n")
    return path


def write_dataset(ds, path: str | Path) -> Path:
    """Write an xarray Dataset as netCDF atomically: a killed run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    # compressed: metrics of a run are mostly smooth floats and NaN padding after divergence
    encoding = {name: {"zlib": True, "complevel": 4} for name, var in ds.data_vars.items()
                if var.dtype.kind in "fiu" and var.ndim > 0}
    ds.to_netcdf(tmp, encoding=encoding)
    os.replace(tmp, path)
    return path


def write_csv(table: pd.DataFrame, path: str | Path, command: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, f"# {command}\n" + table.to_csv(index=False))
    return path


def append_log(path: str | Path, line: str) -> None:
    """Append one line to log.txt (appending a line is atomic enough for a log)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(line.rstrip("\n") + "\n")
