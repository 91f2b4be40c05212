"""Semantic IDs: embeddings -> per-level codes (residual k-means | RQ-VAE) -> unique SIDs.

Typical use (fit on warm items only, then assign new items without refitting)::

    tok, table = fit_sids(SemIdConfig(), emb[warm], warm, n_items)
    table = assign_new_items(tok, table, emb[new], new)
    tok.save(folder, table)

Tokenizers are registered by kind in `TOKENIZERS`; add one with a new module holding a
`SemanticTokenizer` subclass decorated `@register_tokenizer("name")` (its own settings in an
`options_class`), imported below; recipes then take `semid.kind: name`.
"""

from freshrec.semid.base import (
    TOKENIZERS,
    SemanticTokenizer,
    assign_new_items,
    build_sid_table,
    fit_sids,
    load_sid_table,
    load_tokenizer,
    make_tokenizer,
    register_tokenizer,
)
from freshrec.semid.config import SemIdConfig
from freshrec.semid.report import report_table, sid_report
from freshrec.semid.rkmeans import ResidualKMeansTokenizer
from freshrec.semid.rqvae import RQVAETokenizer
from freshrec.semid.table import SidTable
from freshrec.semid.vocab import SidVocab

__all__ = [
    "TOKENIZERS",
    "RQVAETokenizer",
    "ResidualKMeansTokenizer",
    "SemIdConfig",
    "SemanticTokenizer",
    "SidTable",
    "SidVocab",
    "assign_new_items",
    "build_sid_table",
    "fit_sids",
    "load_sid_table",
    "load_tokenizer",
    "make_tokenizer",
    "register_tokenizer",
    "report_table",
    "sid_report",
]
