"""Item texts: the one formatter of what gets embedded for an item, used by the loaders, the
service (items added live) and the merge grid (which reads a section back).

Format: "Title. Genres: a, b. Description: ..." -- the title, then "Label: value" sections in
a fixed order, each a sentence (stripped, ending in . ! ? or …; empty parts skipped), joined by
single spaces with whitespace collapsed (except MovieLens titles, kept as they are);
descriptions are cut to `MAX_DESCRIPTION_CHARS` (ending in …). The embedding cache is keyed by
these texts: changing the format re-embeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

GENRES, CATEGORIES, FEATURES, DESCRIPTION = "Genres", "Categories", "Features", "Description"
MAX_DESCRIPTION_CHARS = 1000


def sentence(expr: pl.Expr) -> pl.Expr:
    """Strip and end with a full stop unless it already ends in . ! ? or …; null if empty."""
    s = expr.str.strip_chars()
    return (
        pl.when(s.is_null() | (s == ""))
        .then(None)
        .when(s.str.contains(r"[.!?…]$"))
        .then(s)
        .otherwise(s + pl.lit("."))
    )


def truncate(expr: pl.Expr, max_chars: int = MAX_DESCRIPTION_CHARS) -> pl.Expr:
    """Cut text to at most `max_chars` characters (adds … when cut); <= 0: no cut."""
    s = expr.str.strip_chars()
    if max_chars <= 0:
        return s
    return (
        pl.when(s.str.len_chars() > max_chars)
        .then(s.str.slice(0, max_chars - 1).str.strip_chars_end() + pl.lit("…"))
        .otherwise(s)
    )


def collapse_whitespace(expr: pl.Expr) -> pl.Expr:
    """Runs of whitespace -> one space, stripped (texts given as they are)."""
    return expr.str.strip_chars().str.replace_all(r"\s+", " ")


def text_expr(
    title: pl.Expr, sections: Sequence[tuple[str, pl.Expr]], *, collapse: bool = True
) -> pl.Expr:
    """The item text of each row: `title`, then one "Label: value" sentence per (label, value)
    section whose value is non-null (values are used as given: join lists, `truncate`
    descriptions before). collapse=False keeps whitespace runs inside the parts (the bundled
    MovieLens texts were made that way, and the embedding cache is keyed by them)."""
    parts = [title, *(pl.lit(f"{label}: ") + value for label, value in sections)]
    joined = pl.concat_str([sentence(p) for p in parts], separator=" ", ignore_nulls=True)
    return collapse_whitespace(joined) if collapse else joined


def item_texts(
    titles: Sequence[str],
    sections: Mapping[str, Sequence[Sequence[str] | str | None]],
    max_description_chars: int = MAX_DESCRIPTION_CHARS,
) -> list[str]:
    """Texts of items given as Python values: `sections` maps a label to one value per item, a
    string or a list of strings (joined with ", "; blank entries dropped); empty values are
    skipped and `DESCRIPTION` values truncated. Formats with `text_expr`."""
    cols: dict[str, list[str | None]] = {"title": list(titles)}
    for label, values in sections.items():
        if len(values) != len(titles):
            raise ValueError(f"{len(values)} {label} values for {len(titles)} items")
        cols[label] = [_joined(v) for v in values]
    exprs = []
    for label in sections:
        value = pl.col(label)
        if label == DESCRIPTION:
            value = truncate(value, max_description_chars)
        exprs.append((label, value))
    frame = pl.DataFrame(cols, schema=dict.fromkeys(cols, pl.String))
    return frame.select(text_expr(pl.col("title"), exprs).alias("text"))["text"].to_list()


def clean_texts(texts: Sequence[str]) -> list[str]:
    """Texts given as they are (custom `text` column, the service's `text` field) with
    whitespace collapsed (`collapse_whitespace`)."""
    series = pl.Series("text", list(texts), dtype=pl.String)
    return series.to_frame().select(collapse_whitespace(pl.col("text")))["text"].to_list()


def item_text(
    title: str,
    categories: Sequence[str] = (),
    description: str | None = None,
    label: str = GENRES,
) -> str:
    """One item's text: "Title. <label>: a, b. Description: ..." (see `item_texts`)."""
    return item_texts([title], {label: [list(categories)], DESCRIPTION: [description]})[0]


def section_values(texts: pl.Series, label: str) -> pl.Series:
    """The value of each text's "<label>: ..." sentence (null where it has none)."""
    return texts.str.extract(rf"(?:^|\s){label}: (.+?)\.(?:\s|$)", 1)


def _joined(value: Sequence[str] | str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = ", ".join(v.strip() for v in value if v and v.strip())
    return value if value.strip() else None
