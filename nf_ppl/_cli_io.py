"""Reading and writing numeric tables for the ``nf-ppl`` command line (CSV or ``.npy``)."""

from __future__ import annotations

import csv
import os

import numpy as np


class CLIError(Exception):
    """An error the command line reports as one line (no traceback) with exit status ``code``.

    2 (the default) for bad input or options, found before any work starts; 1 for a run that
    finished but whose result is refused (e.g. a fit far worse than a Gaussian).
    """

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def check_option(name: str, value, ok: bool, allowed: str) -> None:
    """One-line error naming the option and its allowed range unless ``ok``."""
    if not ok:
        raise CLIError(f"{name} must be {allowed}; got {value!r}")


def read_table(path: str) -> tuple[np.ndarray, list[str] | None]:
    """Read a numeric table: ``.npy`` (2-D float array) or CSV with an optional header row."""
    if not os.path.exists(path):
        raise CLIError(f"data file not found: {path}")
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise CLIError(f"{path}: not a numeric .npy array ({err})") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise CLIError(f"{path}: expected a 2-D numeric array (rows x columns); got shape {arr.shape}, dtype {arr.dtype}")
        return arr.astype(float), None
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if not rows:
        raise CLIError(f"{path}: no rows")
    header = None
    if any(_not_number(c) for c in rows[0]):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    if not rows:
        raise CLIError(f"{path}: a header but no data rows")
    width = len(header) if header else len(rows[0])
    out = np.empty((len(rows), width))
    first_line = 2 if header else 1
    for i, row in enumerate(rows):
        if len(row) != width:
            raise CLIError(f"{path}: line {i + first_line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                out[i, j] = float(cell)
            except ValueError:
                col = header[j] if header else str(j + 1)
                raise CLIError(f"{path}: non-numeric cell {cell.strip()!r} at line {i + first_line}, column {col}") from None
    return out, header


def _not_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return True


def nonfinite_rows(data: np.ndarray) -> np.ndarray:
    return np.flatnonzero(~np.isfinite(data).all(axis=1))


def handle_nonfinite(data: np.ndarray, path: str, drop: bool) -> np.ndarray:
    bad = nonfinite_rows(data)
    if len(bad) == 0:
        return data
    shown = ", ".join(str(i + 1) for i in bad[:10]) + (" ..." if len(bad) > 10 else "")
    if not drop:
        raise CLIError(f"{path}: {len(bad)} of {len(data)} rows contain NaN or inf (data rows {shown}); "
                       f"fix them or pass --drop-nonfinite")
    print(f"dropping {len(bad)} rows with NaN or inf (data rows {shown})")
    return np.delete(data, bad, axis=0)


def check_writable(path: str, force: bool) -> None:
    """Before any work: refuse an existing output (unless ``force``) or a folder that cannot be written.

    A missing output folder is created, and the command says so.
    """
    from inference._io import check_folder

    if os.path.isdir(path):
        raise CLIError(f"--out {path} is a folder; give a file name")
    if os.path.exists(path) and not force:
        raise CLIError(f"output {path} exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    created = not os.path.exists(folder)
    try:
        check_folder(path, mkdir=True, what="--out")
    except OSError as err:
        raise CLIError(str(err)) from None
    if created:
        print(f"created the output folder {folder}")


def write_table(path: str, data: np.ndarray, header: list[str] | None) -> None:
    """Write ``.npy`` or CSV (with the header, if any) atomically: the file is whole or absent."""
    import io

    from inference._io import atomic_write_bytes

    if path.endswith(".npy"):
        buf = io.BytesIO()
        np.save(buf, data, allow_pickle=False)
        payload = buf.getvalue()
    else:
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        if header:
            writer.writerow(header)
        writer.writerows([[repr(float(v)) for v in row] for row in np.atleast_2d(data)])
        payload = text.getvalue().encode("utf-8")
    try:
        atomic_write_bytes(path, payload)
    except OSError as err:
        raise CLIError(f"cannot write {path}: {err}", code=1) from None
