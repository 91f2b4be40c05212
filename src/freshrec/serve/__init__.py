"""Serving: a FastAPI service over a trained checkpoint that learns new items by model editing.

    freshrec serve --checkpoint .freshrec/ml-latest-small/checkpoints/causal-s0/best

`ServeConfig` (settings), `Service` (catalog, recommendations, background edits, recovery),
`CatalogStore` (SQLite / SQLAlchemy catalog + edit ledger), `MicroBatcher`, `create_app` /
`run` (HTTP). The API and the durability model are described in docs/SERVING.md.
"""

from freshrec.serve.batching import MicroBatcher
from freshrec.serve.catalog import CatalogStore
from freshrec.serve.config import API_KEY_ENV, ServeConfig

__all__ = ["API_KEY_ENV", "CatalogStore", "MicroBatcher", "ServeConfig", "create_app", "run"]


def __getattr__(name: str) -> object:
    # the app pulls in FastAPI and the model stack; import it only when asked for
    if name in ("create_app", "run"):
        from freshrec.serve import app

        return getattr(app, name)
    if name == "Service":
        from freshrec.serve.service import Service

        return Service
    raise AttributeError(name)
