"""A formatted table -> the text of a file: Markdown (title, command, notes, table), a booktabs
LaTeX ``tabular``, CSV with ``#`` comment lines. Writing the files is ``bench.store``'s job."""

from __future__ import annotations

import pandas as pd
import xarray as xr

from bench.report.formatting import latex_escape


def tabular(colspec: str, header: list, body: list[list[str]]) -> str:
    """A booktabs tabular. ``header``: rows (lists of cells) or ready lines (strings)."""
    def line(row_cells: list[str] | str) -> str:
        return row_cells if isinstance(row_cells, str) else " & ".join(row_cells) + r" \\"

    return "\n".join([
        rf"\begin{{tabular}}{{{colspec}}}", r"\toprule", *map(line, header), r"\midrule",
        *map(line, body), r"\bottomrule", r"\end{tabular}",
    ]) + "\n"


def latex_table(display: pd.DataFrame, colspec: str) -> str:
    """A display table as it is: one header row of its column names, one row per row."""
    header = [latex_escape(c) for c in display.columns]
    body = [[latex_escape(str(v)) for v in row] for row in display.itertuples(index=False)]
    return tabular(colspec, [header], body)


def markdown(table: pd.DataFrame, title: str, command: str, notes: str) -> str:
    """``# title``, the command in a bash block, the notes, then the table."""
    # disable_numparse: cells are already formatted; tabulate must not re-format "0.010" etc.
    colalign = ["left" if c in ("method", "device") else "right" for c in table.columns]
    body = table.to_markdown(index=False, disable_numparse=True, colalign=colalign)
    return f"# {title}\n\nMade by:\n\n```bash\n{command}\n```\n\n{notes.strip()}\n\n{body}\n"


def csv(table: pd.DataFrame, command: str, comments: tuple[str, ...] = ()) -> str:
    """``# command`` and ``# comment`` lines, then the numbers at full precision."""
    header = "".join(f"# {line}\n" for line in (command, *comments))
    return header + table.to_csv(index=False, lineterminator="\n")


def provenance(ds: xr.Dataset) -> str:
    """"world: …; model: …; device: …." from the Dataset's attributes ("" if none)."""
    parts = [f"{key}: {ds.attrs[key]}" for key in ("world", "model", "device") if key in ds.attrs]
    return "; ".join(parts) + "." if parts else ""
