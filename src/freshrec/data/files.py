"""Reading the loaders' input files: CSV and JSON lines, read with polars (vectorised).

Every problem becomes a `DataError` naming the file, the 1-based line (header = line 1) and,
where it applies, the column; polars/json exceptions never escape. Python loops over rows run
only on the error path, to locate the offending line.

Frames returned by `read_csv`/`read_jsonl` carry a `__row` column: the 0-based record index in
the file, which `CsvFile.lines`/`JsonlFile.lines` turn into file line numbers.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from freshrec.errors import DataError

ROW = "__row"
_CHUNK = 1 << 24


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


FileRef = CsvFile | JsonlFile
"""A file being validated: maps `__row` record indices to file lines."""
