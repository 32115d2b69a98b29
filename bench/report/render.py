"""A formatted table -> the text of a file: Markdown (title, command, notes, table), a booktabs
LaTeX ``tabular`` (by hand for the skill and timing tables; through pandas' ``Styler.to_latex``
for the others), CSV with ``#`` comment lines. Writing the files is ``bench.store``'s job."""

from __future__ import annotations

import numpy as np
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


def styler_latex(display: pd.DataFrame, column_format: str, bold: pd.DataFrame | None = None,
                 latex_columns: bool = False, commands: tuple[tuple[str, str], ...] = (),
                 index: bool = False, **options) -> str:
    """A display table (unicode cells, as the Markdown shows them) as booktabs LaTeX through
    ``Styler.to_latex``: cells and index labels through ``latex_escape``, column labels too
    unless ``latex_columns`` (they are LaTeX already); ``bold`` (a boolean frame like
    ``display``) marks cells set in bold; the index is shown only with ``index``;
    ``commands`` are LaTeX commands put before the tabular, e.g. ``("small", "")`` ->
    ``\\small``. ``options`` go to ``to_latex`` (``caption``, ``label``, ``environment``...)."""
    frame = display.map(lambda v: latex_escape(str(v)))
    frame.index = pd.Index([latex_escape(str(i)) for i in display.index], name=display.index.name)
    if not latex_columns:
        frame.columns = [latex_escape(str(c)) for c in display.columns]
    styler = frame.style
    if bold is not None:
        mask = bold.to_numpy()
        styler = styler.apply(lambda _: np.where(mask, "font-weight: bold", ""), axis=None)
    if not index:
        styler = styler.hide(axis="index")
    styler = styler.set_table_styles([{"selector": name, "props": f":{args};"}
                                      for name, args in commands], overwrite=False)
    return styler.to_latex(column_format=column_format, hrules=True, multicol_align="c",
                           convert_css=True, **options)


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
    """"world: …; periods: …; normalisation: …; model: …; device: …." from the Dataset's
    attributes ("" if none)."""
    parts = [f"{key}: {ds.attrs[key]}" for key in
             ("world", "periods", "normalisation", "model", "device") if key in ds.attrs]
    return "; ".join(parts) + "." if parts else ""
