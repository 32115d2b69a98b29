"""Results on disk. Only this module writes results files (DESIGN.md §2).

Every table is written as Markdown (with the exact command that made it), CSV and LaTeX, each
first to a temporary file and then renamed, so a crash never leaves a half-written table.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pandas as pd


def command_line() -> str:
    """The command that is running, as a user would type it."""
    args = sys.argv[1:]
    prog = "python -m bench" if sys.argv and sys.argv[0].endswith(("bench", "__main__.py")) \
        else Path(sys.argv[0]).name
    return " ".join([prog, *map(shlex.quote, args)])


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
