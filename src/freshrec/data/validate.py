"""Shared reading, validation and normalisation helpers for the loaders.

Files are read with polars (vectorised). Every problem becomes a `DataError` naming the file,
the 1-based line (header = line 1) and the column; polars/json exceptions never escape.
Python loops over rows run only on the error path, to locate the offending line.

Frames returned by `read_csv`/`read_jsonl` carry a `__row` column: the 0-based record index in
the file, which `CsvFile.lines`/`JsonlFile.lines` turn into file line numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from freshrec.data.schema import Dataset, Interactions, Items
from freshrec.errors import DataError

ROW = "__row"
_CHUNK = 1 << 24
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


# --------------------------------------------------------------------------- raw file checks


def check_file(path: Path) -> None:
    """Raise a DataError if `path` is not an existing, non-empty file."""
    if not path.is_file():
        where = "a folder, not a file" if path.is_dir() else "not found"
        raise DataError(f"file {where} (expected in {path.parent})", file=path)
    if path.stat().st_size == 0:
        raise DataError("file is empty (0 bytes)", file=path)


def check_utf8(path: Path) -> None:
    """Raise a DataError at the first byte that is not valid UTF-8 (line + byte offset).

    Reads in 16 MiB chunks, so memory stays bounded on multi-GB files.
    """
    newlines = 0  # newlines before `base`
    last_nl = -1  # file offset of the last newline before `base`
    base = 0  # file offset of pending[0]
    pending = b""
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(_CHUNK)
            buf = pending + chunk
            if not buf:
                return
            try:
                buf.decode("utf-8")
                good = len(buf)
            except UnicodeDecodeError as e:
                truncated = e.reason == "unexpected end of data" and bool(chunk)
                if not truncated:
                    off = base + e.start
                    nl_before = newlines + buf.count(b"\n", 0, e.start)
                    rel = buf.rfind(b"\n", 0, e.start)
                    line_start = base + rel + 1 if rel >= 0 else last_nl + 1
                    byte = buf[e.start]
                    raise DataError(
                        f"invalid UTF-8 byte 0x{byte:02x} at byte {off - line_start + 1} of the "
                        f"line (file offset {off}); re-encode the file as UTF-8, e.g. "
                        f"`iconv -f latin1 -t utf-8`",
                        file=path,
                        line=nl_before + 1,
                    ) from None
                good = e.start
            newlines += buf.count(b"\n", 0, good)
            rel = buf.rfind(b"\n", 0, good)
            if rel >= 0:
                last_nl = base + rel
            base += good
            pending = buf[good:]
            if not chunk:
                return


# --------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class CsvFile:
    """A CSV file being validated; maps record indices to file lines."""

    path: Path

    def lines(self, rows: Sequence[int]) -> list[int]:
        """1-based file lines where the 0-based data records `rows` start (header = line 1).

        Uses the csv module (error path only) so quoted multi-line fields are counted right.
        """
        wanted = {int(r) for r in rows}
        found: dict[int, int] = {}
        with open(self.path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            prev_end = 0
            for record, _ in enumerate(reader, start=-1):  # record -1 is the header
                if record >= 0 and record in wanted:
                    found[record] = prev_end + 1
                    if len(found) == len(wanted):
                        break
                prev_end = reader.line_num
        return [found.get(int(r), int(r) + 2) for r in rows]

    def line(self, row: int) -> int:
        return self.lines([row])[0]


def read_csv(path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> pl.DataFrame:
    """Read a CSV with a header; every column as a string, plus the `__row` index.

    Returns the `required` columns and those `optional` ones that are present. Raises a
    DataError for a missing/empty/non-UTF-8 file, ragged rows, missing columns or no data rows.
    """
    check_file(path)
    check_utf8(path)
    try:
        df = pl.read_csv(path, infer_schema=False, has_header=True)
    except pl.exceptions.NoDataError:
        raise DataError(
            f"file is empty: expected a header line {','.join(required)}", file=path
        ) from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise _locate_csv_error(path, e) from None
    df = df.rename({c: c.strip() for c in df.columns})
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}; "
            f"found columns {', '.join(map(repr, df.columns))}; "
            f"the header must contain {','.join(required)}",
            file=path,
            line=1,
            column=missing[0],
        )
    keep = [*required, *(c for c in optional if c in df.columns)]
    df = df.select(keep).with_row_index(ROW)
    # Blank lines (all fields null) are ignored, not reported.
    df = df.filter(~pl.all_horizontal(pl.col(keep).is_null()))
    if df.height == 0:
        raise DataError("file has a header but no data rows", file=path, line=2)
    return df


def _locate_csv_error(path: Path, err: Exception) -> DataError:
    """Find the first record whose field count differs from the header's (error path)."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
            prev_end = reader.line_num
            for record in reader:
                if record and len(record) != len(header):
                    return DataError(
                        f"expected {len(header)} fields ({','.join(header)}) but found "
                        f"{len(record)}; quote values that contain commas",
                        file=path,
                        line=prev_end + 1,
                    )
                prev_end = reader.line_num
        except csv.Error as e:
            return DataError(f"malformed CSV: {e}", file=path, line=reader.line_num)
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DataError(f"could not parse CSV: {first}", file=path)


# --------------------------------------------------------------------------- JSON lines


@dataclass(frozen=True)
class JsonlFile:
    """A JSON-lines file being validated; maps record indices (blank lines skipped) to lines."""

    path: Path

    def lines(self, rows: Sequence[int]) -> list[int]:
        wanted = {int(r) for r in rows}
        found: dict[int, int] = {}
        record = 0
        with open(self.path, encoding="utf-8") as fh:
            for lineno, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                if record in wanted:
                    found[record] = lineno
                    if len(found) == len(wanted):
                        break
                record += 1
        return [found.get(int(r), int(r) + 1) for r in rows]

    def line(self, row: int) -> int:
        return self.lines([row])[0]


def read_jsonl(path: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Read a JSON-lines file keeping only the fields of `schema` (others ignored), plus `__row`.

    Fields absent from an object become null. Raises a DataError with the line for malformed
    JSON, a line that is not an object, or a field of the wrong type.
    """
    check_file(path)
    check_utf8(path)
    try:
        df = pl.read_ndjson(path, schema=schema)
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        raise _locate_jsonl_error(path, schema, e) from None
    if df.height == 0:
        raise DataError("file is empty: no JSON objects", file=path)
    return df.with_row_index(ROW)


def _json_type_ok(value: object, dtype: pl.DataType) -> bool:
    if value is None:
        return True
    if dtype == pl.String:
        return isinstance(value, str)
    if isinstance(dtype, pl.List):
        return isinstance(value, list) and all(_json_type_ok(v, dtype.inner) for v in value)
    return True


def _locate_jsonl_error(path: Path, schema: dict[str, pl.DataType], err: Exception) -> DataError:
    """Parse line by line (error path) to find the offending line."""
    with open(path, encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                return DataError(
                    f"malformed JSON: {e.msg} at character {e.colno}", file=path, line=lineno
                )
            if not isinstance(obj, dict):
                return DataError(
                    f"expected a JSON object per line, found {type(obj).__name__}",
                    file=path,
                    line=lineno,
                )
            for key, dtype in schema.items():
                if not _json_type_ok(obj.get(key), dtype):
                    want = "a string" if dtype == pl.String else "a list of strings"
                    return DataError(
                        f"expected {want}, found {json.dumps(obj[key])[:80]}",
                        file=path,
                        line=lineno,
                        column=key,
                    )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DataError(f"could not parse JSON lines: {first}", file=path)


# --------------------------------------------------------------------------- column checks

FileRef = CsvFile | JsonlFile


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


# --------------------------------------------------------------------------- text + assembly


def natural_sort(keys: pl.Series) -> pl.Series:
    """Unique keys sorted numerically when all are integers, else lexicographically."""
    uniq = keys.unique()
    if uniq.dtype == pl.String:
        as_int = uniq.str.strip_chars().cast(pl.Int64, strict=False)
        if as_int.null_count() == 0:
            return uniq.gather(as_int.arg_sort())
    return uniq.sort()


def assemble(
    name: str,
    items: pl.DataFrame,
    inter: pl.DataFrame,
    meta: dict[str, object],
    extra: Sequence[str] = (),
) -> Dataset:
    """Build the normalised Dataset.

    items: columns key, title, text in catalog order (row i = item index i), only items with
    interactions. inter: columns user (key), item (key), ts (int64 s) and the `extra` columns,
    which are stored in `meta` as numpy arrays aligned with the sorted interactions.
    Users are indexed in natural (numeric when possible) ascending key order.
    """
    users = natural_sort(inter["user"])
    user_idx = pl.DataFrame({"user": users, "u": np.arange(len(users), dtype=np.int32)})
    item_idx = pl.DataFrame({"item": items["key"], "i": np.arange(items.height, dtype=np.int32)})
    df = inter.join(user_idx, on="user", how="left").join(item_idx, on="item", how="left")
    u = df["u"].to_numpy().astype(np.int32)
    i = df["i"].to_numpy().astype(np.int32)
    ts = df["ts"].to_numpy().astype(np.int64)
    order = np.lexsort((i, ts, u))
    meta = dict(meta)
    for col in extra:
        meta[col] = df[col].to_numpy()[order]
    return Dataset(
        name=name,
        user_ids=[str(x) for x in users.to_list()],
        items=Items(
            ids=[str(x) for x in items["key"].to_list()],
            titles=items["title"].to_list(),
            texts=items["text"].to_list(),
        ),
        interactions=Interactions(user=u[order], item=i[order], ts=ts[order]),
        meta=meta,
    )
