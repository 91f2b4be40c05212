"""Every validation error: a DataError naming the file, line, column and the cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from freshrec.data import load_amazon, load_custom, load_movielens
from freshrec.data.files import _CHUNK, check_utf8
from freshrec.errors import DataError

MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation\n"
    '2,"American President, The (1995)",Comedy|Drama\n'
    "3,Heat (1995),Action\n"
)
RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,1,4.0,964982703\n"
    "1,2,3.5,964981247\n"
    "2,3,5.0,964982224\n"
    "2,1,4.0,964983815\n"
)
CAT = "Video_Games"


def _ml(tmp_path: Path, *, movies: str | bytes = MOVIES, ratings: str | bytes = RATINGS) -> Path:
    folder = tmp_path / "ml"
    folder.mkdir(exist_ok=True)
    for name, content in (("movies.csv", movies), ("ratings.csv", ratings)):
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return folder


def _raises_ml(tmp_path: Path, **files: str | bytes) -> DataError:
    with pytest.raises(DataError) as info:
        load_movielens(_ml(tmp_path, **files))
    err = info.value
    # translated, never chained onto a polars/json traceback
    assert err.__cause__ is None
    return err


def _where(err: DataError, file: str, line: int | None, column: str | None) -> None:
    assert err.file is not None
    assert Path(err.file).name == file
    assert err.line == line
    assert err.column == column
    prefix = file if line is None else f"{file}, line {line}"
    assert prefix in str(err)
    if column is not None:
        assert f"column '{column}'" in str(err)


# --------------------------------------------------------------------------- the happy path


def test_small_movielens_loads(tmp_path: Path) -> None:
    ds = load_movielens(_ml(tmp_path))
    assert ds.items.titles[1] == "American President, The (1995)"
    assert len(ds.interactions) == 4


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    ds = load_movielens(_ml(tmp_path, ratings=RATINGS.replace("\n2,3", "\n\n2,3") + "\n"))
    assert len(ds.interactions) == 4


# --------------------------------------------------------------------------- CSV structure


def test_missing_column(tmp_path: Path) -> None:
    ratings = RATINGS.replace("userId,movieId,rating,timestamp", "userId,movieId,rating,time")
    err = _raises_ml(tmp_path, ratings=ratings)
    _where(err, "ratings.csv", 1, "timestamp")
    assert "missing column 'timestamp'" in str(err)
    assert "found columns 'userId', 'movieId', 'rating', 'time'" in str(err)


def test_several_missing_columns(custom_dir: Path) -> None:
    (custom_dir / "items.csv").write_text("id,name\n1,x\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_custom(custom_dir)
    _where(info.value, "items.csv", 1, "item_id")
    assert "missing columns 'item_id', 'title'; found columns 'id', 'name'" in str(info.value)


def test_empty_file(tmp_path: Path) -> None:
    err = _raises_ml(tmp_path, ratings="")
    _where(err, "ratings.csv", None, None)
    assert "file is empty" in str(err)


def test_header_only_file(tmp_path: Path) -> None:
    err = _raises_ml(tmp_path, ratings="userId,movieId,rating,timestamp\n")
    _where(err, "ratings.csv", 2, None)
    assert "header but no data rows" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    folder = _ml(tmp_path)
    (folder / "ratings.csv").unlink()
    with pytest.raises(DataError, match=r"ratings.csv: file not found"):
        load_movielens(folder)


def test_unquoted_comma(tmp_path: Path) -> None:
    movies = MOVIES + "4,Sabrina, The (1995),Comedy\n"
    err = _raises_ml(tmp_path, movies=movies)
    _where(err, "movies.csv", 5, None)
    assert "expected 3 fields (movieId,title,genres) but found 4" in str(err)
    assert "quote values that contain commas" in str(err)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    movies = MOVIES.encode() + "4,Amélie (2001),Comedy\n".encode("latin-1")
    err = _raises_ml(tmp_path, movies=movies)
    _where(err, "movies.csv", 5, None)
    # "4,Am" is 4 bytes, the latin-1 é is byte 5 of the line
    assert "invalid UTF-8 byte 0xe9 at byte 5 of the line" in str(err)
    assert f"file offset {len(MOVIES.encode()) + 4}" in str(err)


def test_non_utf8_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    head = b"a\n" + b"x" * (_CHUNK - 3) + "é".encode()  # é straddles the chunk boundary
    path.write_bytes(head + b"\nok\nbad\xff\n")
    with pytest.raises(DataError) as info:
        check_utf8(path)
    _where(info.value, "big.csv", 4, None)
    assert "invalid UTF-8 byte 0xff at byte 4 of the line" in str(info.value)
    path.write_bytes(head + b"\n")
    check_utf8(path)  # valid: no error


# --------------------------------------------------------------------------- values


def test_unparsable_timestamp(tmp_path: Path) -> None:
    ratings = RATINGS.replace("964981247", "yesterday")
    err = _raises_ml(tmp_path, ratings=ratings)
    _where(err, "ratings.csv", 3, "timestamp")
    assert "cannot parse timestamp 'yesterday': expected integer unix seconds" in str(err)


def test_unparsable_timestamp_deep_in_real_file(tmp_path: Path, ml_dir: Path) -> None:
    lines = (ml_dir / "ratings.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[50_000] == "322,953,4.0,1217676860\n"
    lines[50_000] = "322,953,4.0,2008-08-02\n"
    movies = (ml_dir / "movies.csv").read_bytes()
    err = _raises_ml(tmp_path, movies=movies, ratings="".join(lines))
    _where(err, "ratings.csv", 50_001, "timestamp")
    assert "'2008-08-02'" in str(err)


def test_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    movies = MOVIES.replace("Heat (1995)", '"Heat\n(1995)"') + "1,Toy Story again,Comedy\n"
    err = _raises_ml(tmp_path, movies=movies)
    # the record of movie 3 spans lines 4-5, so the duplicate is on line 6
    _where(err, "movies.csv", 6, "movieId")
    assert "duplicate id 1 on lines 2 and 6" in str(err)


def test_bad_integer(tmp_path: Path) -> None:
    err = _raises_ml(tmp_path, ratings=RATINGS.replace("2,3,5.0", "two,3,5.0"))
    _where(err, "ratings.csv", 4, "userId")
    assert "cannot parse 'two' as an integer" in str(err)


def test_empty_value(tmp_path: Path) -> None:
    err = _raises_ml(tmp_path, ratings=RATINGS.replace("2,1,4.0", "2,,4.0"))
    _where(err, "ratings.csv", 5, "movieId")
    assert "empty value in column 'movieId'" in str(err)


def test_item_without_metadata(tmp_path: Path) -> None:
    ratings = RATINGS + "3,999,4.0,964983900\n3,999,2.0,964983901\n3,998,1.0,964983902\n"
    err = _raises_ml(tmp_path, ratings=ratings)
    _where(err, "ratings.csv", 6, "movieId")
    assert "item 999 has no metadata in movies.csv" in str(err)
    assert "(3 interactions reference 2 unknown items)" in str(err)


def test_duplicate_item_id(tmp_path: Path) -> None:
    err = _raises_ml(tmp_path, movies=MOVIES + "2,Duplicate (1999),Drama\n")
    _where(err, "movies.csv", 5, "movieId")
    assert "duplicate id 2 on lines 3 and 5" in str(err)


def test_empty_title(tmp_path: Path) -> None:
    err = _raises_ml(tmp_path, movies=MOVIES.replace("Heat (1995)", "  "))
    _where(err, "movies.csv", 4, "title")
    assert "empty title" in str(err)


# --------------------------------------------------------------------------- Amazon (JSON lines)


def _meta_lines(folder: Path) -> list[str]:
    return (folder / f"meta_{CAT}.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


def _write_meta(folder: Path, lines: list[str]) -> None:
    (folder / f"meta_{CAT}.jsonl").write_text("".join(lines), encoding="utf-8")


def _raises_amazon(folder: Path, **kw: object) -> DataError:
    with pytest.raises(DataError) as info:
        load_amazon(folder, CAT, **kw)
    assert info.value.__cause__ is None
    return info.value


def test_malformed_json(amazon_dir: Path) -> None:
    lines = _meta_lines(amazon_dir)
    lines[2] = lines[2][:40] + "\n"  # truncated object on line 3
    _write_meta(amazon_dir, lines)
    err = _raises_amazon(amazon_dir)
    _where(err, f"meta_{CAT}.jsonl", 3, None)
    assert "malformed JSON: Expecting ':' delimiter at character 41" in str(err)


def test_json_line_not_an_object(amazon_dir: Path) -> None:
    lines = _meta_lines(amazon_dir)
    _write_meta(amazon_dir, [*lines[:4], "\n", '["B0X", "title"]\n', *lines[4:]])
    err = _raises_amazon(amazon_dir)
    _where(err, f"meta_{CAT}.jsonl", 6, None)
    assert "expected a JSON object per line, found list" in str(err)


def test_json_field_of_wrong_type(amazon_dir: Path) -> None:
    lines = _meta_lines(amazon_dir)
    obj = json.loads(lines[4])
    obj["features"] = "Online multiplayer"
    lines[4] = json.dumps(obj) + "\n"
    _write_meta(amazon_dir, lines)
    err = _raises_amazon(amazon_dir)
    _where(err, f"meta_{CAT}.jsonl", 5, "features")
    assert 'expected a list of strings, found "Online multiplayer"' in str(err)


def test_duplicate_parent_asin(amazon_dir: Path) -> None:
    lines = _meta_lines(amazon_dir)
    _write_meta(amazon_dir, [*lines[:2], "\n", *lines, lines[1]])
    err = _raises_amazon(amazon_dir)
    asin = json.loads(lines[0])["parent_asin"]
    # blank line 3 shifts the copies: original line 1 is now line 4
    _where(err, f"meta_{CAT}.jsonl", 4, "parent_asin")
    assert f"duplicate id '{asin}' on lines 1 and 4" in str(err)
    assert "(2 duplicated ids in total)" in str(err)


def test_empty_amazon_title(amazon_dir: Path) -> None:
    lines = _meta_lines(amazon_dir)
    obj = json.loads(lines[6])
    obj["title"] = ""
    lines[6] = json.dumps(obj) + "\n"
    _write_meta(amazon_dir, lines)
    err = _raises_amazon(amazon_dir)
    _where(err, f"meta_{CAT}.jsonl", 7, "title")
    assert "empty title" in str(err)


def test_non_utf8_jsonl(amazon_dir: Path) -> None:
    path = amazon_dir / f"meta_{CAT}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace("Café".encode(), "Caf\xe9".encode("latin-1"))
    path.write_bytes(b"".join(lines))
    err = _raises_amazon(amazon_dir)
    at = lines[3].index(b"Caf\xe9") + 4
    _where(err, f"meta_{CAT}.jsonl", 4, None)
    assert f"invalid UTF-8 byte 0xe9 at byte {at} of the line" in str(err)


def test_empty_jsonl(amazon_dir: Path) -> None:
    (amazon_dir / f"meta_{CAT}.jsonl").write_text("\n  \n", encoding="utf-8")
    err = _raises_amazon(amazon_dir)
    _where(err, f"meta_{CAT}.jsonl", None, None)
    assert "file is empty: no JSON objects" in str(err)


def test_amazon_item_without_metadata(amazon_dir: Path) -> None:
    lines = _meta_lines(amazon_dir)
    gone = json.loads(lines[5])["parent_asin"]
    _write_meta(amazon_dir, lines[:5] + lines[6:])
    csv_lines = (amazon_dir / f"{CAT}.csv").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(csv_lines, start=1) if f",{gone}," in line)
    n = sum(f",{gone}," in line for line in csv_lines)
    err = _raises_amazon(amazon_dir)
    _where(err, f"{CAT}.csv", first, "parent_asin")
    assert f"item '{gone}' has no metadata in meta_{CAT}.jsonl ({n} interactions" in str(err)


def test_amazon_missing_column(amazon_dir: Path) -> None:
    path = amazon_dir / f"{CAT}.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("parent_asin", "asin", 1), encoding="utf-8")
    err = _raises_amazon(amazon_dir)
    _where(err, f"{CAT}.csv", 1, "parent_asin")
    assert "found columns 'user_id', 'asin', 'rating', 'timestamp'" in str(err)


def test_amazon_bad_timestamp_in_split_file(amazon_dir: Path) -> None:
    path = amazon_dir / "5core_timestamp_w_his" / f"{CAT}.valid.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    fields = lines[2].split(",")
    fields[3] = "1.6e12"
    lines[2] = ",".join(fields)
    path.write_text("".join(lines), encoding="utf-8")
    err = _raises_amazon(amazon_dir, official_split=True)
    _where(err, f"{CAT}.valid.csv", 3, "timestamp")
    assert "cannot parse timestamp '1.6e12': expected integer unix milliseconds" in str(err)


def test_amazon_missing_split_file(amazon_dir: Path) -> None:
    shutil.rmtree(amazon_dir / "5core_timestamp_w_his")
    err = _raises_amazon(amazon_dir, official_split=True)
    _where(err, f"{CAT}.train.csv", None, None)
    assert "official split file not found" in str(err)
    assert "5core_timestamp_w_his" in str(err)


# --------------------------------------------------------------------------- custom


def _raises_custom(folder: Path) -> DataError:
    with pytest.raises(DataError) as info:
        load_custom(folder)
    return info.value


def test_bad_iso_timestamp(custom_dir: Path) -> None:
    path = custom_dir / "interactions.csv"
    path.write_text(
        path.read_text(encoding="utf-8").replace("2023-11-16", "2023-13-45"), encoding="utf-8"
    )
    err = _raises_custom(custom_dir)
    _where(err, "interactions.csv", 6, "timestamp")
    assert "cannot parse timestamp '2023-13-45': expected unix seconds or ISO-8601" in str(err)


def test_millisecond_timestamps_are_flagged(custom_dir: Path) -> None:
    path = custom_dir / "interactions.csv"
    path.write_text(
        path.read_text(encoding="utf-8").replace("1700100000", "1700100000000"), encoding="utf-8"
    )
    err = _raises_custom(custom_dir)
    _where(err, "interactions.csv", 4, "timestamp")
    assert "looks like milliseconds" in str(err)


def test_empty_text(custom_dir: Path) -> None:
    (custom_dir / "items.csv").write_text(
        "item_id,title,text\n10,The Hobbit,A journey.\n2,Dune,\n3,Pride,x\n4,Neuromancer,y\n",
        encoding="utf-8",
    )
    err = _raises_custom(custom_dir)
    _where(err, "items.csv", 3, "text")
    assert "empty text" in str(err)


def test_custom_duplicate_item(custom_dir: Path) -> None:
    path = custom_dir / "items.csv"
    path.write_text(path.read_text(encoding="utf-8") + "2,Dune Messiah,,\n", encoding="utf-8")
    err = _raises_custom(custom_dir)
    _where(err, "items.csv", 7, "item_id")
    assert "duplicate id '2' on lines 3 and 7" in str(err)


def test_custom_bad_rating(custom_dir: Path) -> None:
    path = custom_dir / "interactions.csv"
    path.write_text(
        path.read_text(encoding="utf-8").replace("1700000500,4", "1700000500,good"),
        encoding="utf-8",
    )
    err = _raises_custom(custom_dir)
    _where(err, "interactions.csv", 5, "rating")
    assert "cannot parse 'good' as a number" in str(err)
