"""Column checks and parsing for the loaders: every problem is a `DataError` naming the file,
the 1-based line of the first offending row (through the frame's `__row` column, see
`freshrec.data.files`) and the column, with the number of rows affected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from freshrec.data.files import ROW, FileRef
from freshrec.errors import DataError

_ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%d %H:%M%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
# Unix seconds beyond this (year 5138) are almost certainly milliseconds.
_MAX_UNIX_SECONDS = 100_000_000_000


def _first_row(df: pl.DataFrame, mask: pl.Series) -> int:
    return int(df.filter(mask)[ROW][0])


def check_present(df: pl.DataFrame, column: str, f: FileRef, what: str | None = None) -> None:
    """Raise at the first row whose `column` is null or blank."""
    mask = df[column].is_null() | (df[column].str.strip_chars() == "")
    n = int(mask.sum())
    if n:
        what = what or f"value in column '{column}'"
        more = f" ({n} rows affected)" if n > 1 else ""
        raise DataError(
            f"empty {what}; every row needs one{more}",
            file=f.path,
            line=f.line(_first_row(df, mask)),
            column=column,
        )


def parse_int(df: pl.DataFrame, column: str, f: FileRef) -> pl.Series:
    """Column as Int64, or a DataError showing the first bad value."""
    check_present(df, column, f)
    out = df[column].str.strip_chars().cast(pl.Int64, strict=False)
    _raise_unparsed(df, column, out, f, "an integer")
    return out


def parse_float(df: pl.DataFrame, column: str, f: FileRef, *, required: bool = True) -> pl.Series:
    """Column as Float64, or a DataError showing the first bad value.

    required=False lets blank cells through (as null).
    """
    if required:
        check_present(df, column, f)
    raw = df[column].str.strip_chars()
    out = raw.cast(pl.Float64, strict=False)
    blank = raw.is_null() | (raw == "")
    _raise_unparsed(df, column, out, f, "a number", ignore=None if required else blank)
    return out


def _raise_unparsed(
    df: pl.DataFrame,
    column: str,
    parsed: pl.Series,
    f: FileRef,
    want: str,
    ignore: pl.Series | None = None,
) -> None:
    bad = parsed.is_null()
    if ignore is not None:
        bad = bad & ~ignore
    n = int(bad.sum())
    if n:
        row = _first_row(df, bad)
        value = df.filter(bad)[column][0]
        more = f" ({n} bad values in total)" if n > 1 else ""
        raise DataError(
            f"cannot parse {value!r} as {want}{more}",
            file=f.path,
            line=f.line(row),
            column=column,
        )


def parse_timestamps(df: pl.DataFrame, column: str, f: FileRef, unit: str = "s") -> np.ndarray:
    """int64[n] unix seconds from a timestamp column.

    unit: "s" integer unix seconds; "ms" integer unix milliseconds (floored to seconds);
    "auto" unix seconds (integer or decimal) or ISO-8601 (`2023-05-01T12:30:00Z`, with an
    optional offset, fraction or date only; no offset = UTC), mixed freely.
    """
    check_present(df, column, f, what="timestamp")
    raw = df[column].str.strip_chars()
    if unit in ("s", "ms"):
        ts = raw.cast(pl.Int64, strict=False)
        hint = f"integer unix {'milliseconds' if unit == 'ms' else 'seconds'}"
    elif unit == "auto":
        num = raw.cast(pl.Float64, strict=False).floor().cast(pl.Int64, strict=False)
        iso = raw.str.replace(r"[Zz]$", "+00:00")
        parts = [num]
        for fmt in _ISO_FORMATS:
            dt = iso.str.to_datetime(fmt, strict=False, time_zone="UTC")
            parts.append(dt.dt.epoch("s"))
        ts = pl.select(pl.coalesce(parts)).to_series()
        hint = "unix seconds or ISO-8601 such as 2023-05-01T12:30:00Z"
    else:
        raise ValueError(f"unknown timestamp unit {unit!r}")
    bad = ts.is_null()
    if bool(bad.any()):
        n = int(bad.sum())
        more = f" ({n} bad values in total)" if n > 1 else ""
        raise DataError(
            f"cannot parse timestamp {df.filter(bad)[column][0]!r}: expected {hint}{more}",
            file=f.path,
            line=f.line(_first_row(df, bad)),
            column=column,
        )
    out = ts.to_numpy().astype(np.int64)
    if unit == "ms":
        out = out // 1000
    elif unit == "auto" and out.size and int(out.max()) >= _MAX_UNIX_SECONDS:
        row = int(np.argmax(out))
        raise DataError(
            f"timestamp {df[column][row]!r} is in the year 5000+: it looks like milliseconds; "
            f"divide by 1000 to get unix seconds",
            file=f.path,
            line=f.line(int(df[ROW][row])),
            column=column,
        )
    return out


def check_unique(df: pl.DataFrame, column: str, f: FileRef) -> None:
    """Raise naming both lines of the first duplicated id."""
    dup = df[column].is_duplicated()
    if bool(dup.any()):
        rows = df.filter(dup)
        value = rows[column][0]
        first_two = rows.filter(pl.col(column) == value)[ROW].head(2).to_list()
        l1, l2 = f.lines(first_two)
        n = rows[column].n_unique()
        more = f" ({n} duplicated ids in total)" if n > 1 else ""
        raise DataError(
            f"duplicate id {value!r} on lines {l1} and {l2}; ids must be unique{more}",
            file=f.path,
            line=l2,
            column=column,
        )


def check_known(df: pl.DataFrame, column: str, known: pl.Series, f: FileRef, meta: Path) -> None:
    """Raise at the first row whose item id is not in `known` (the metadata ids)."""
    unknown = ~df[column].is_in(known.implode())
    n = int(unknown.sum())
    if n:
        bad = df.filter(unknown)
        k = bad[column].n_unique()
        raise DataError(
            f"item {bad[column][0]!r} has no metadata in {meta.name} ({n} interactions "
            f"reference {k} unknown item{'s' if k > 1 else ''}); add the items to "
            f"{meta.name} or remove their interactions",
            file=f.path,
            line=f.line(int(bad[ROW][0])),
            column=column,
        )
