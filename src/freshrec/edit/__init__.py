"""GenRecEdit-style model editing: inject new items into a trained generative recommender in
seconds, without retraining (docs/EDITING.md).

```python
from freshrec.edit import EditConfig, EditStack, GenRecEditor
editor = GenRecEditor(model, checkpoint_dir, split, table, emb, EditConfig(), work)
pack = editor.edit(new_items, seed=0)
pack.save(folder)
stack = EditStack(model, checkpoint_dir)
stack.push(pack)          # the model now recommends the new items; stack.pop() rolls back
```

Applying packs is model-level: `EditPack`, `EditStack` (`freshrec.model.edit_packs`) and
`EditHooks` (`freshrec.model.edit_hooks`) live in `freshrec.model` and are re-exported here.
`GenRecEditor` implements the `Editor` interface and is registered as `genrecedit` in
`EDITORS` (`freshrec edit --editor NAME`); add an algorithm with a new module holding an
`Editor` subclass decorated `@register_editor("name", config=MyConfig)`, imported below.
"""

from freshrec.edit.base import EDITORS, Editor, register_editor
from freshrec.edit.config import EditConfig
from freshrec.edit.covariance import key_covariances, split_hash
from freshrec.edit.editor import GenRecEditor
from freshrec.edit.locate import Localisation, fixed_localisation, probe_localisation
from freshrec.edit.pseudo import PseudoRequests, pseudo_requests
from freshrec.edit.solve import alphaedit_solve, memit_solve, null_space_basis
from freshrec.model.checkpoint import checkpoint_identity, file_sha256
from freshrec.model.edit_hooks import EditHooks, active_hooks, suspend_edits
from freshrec.model.edit_packs import EditPack, EditStack

__all__ = [
    "EDITORS",
    "EditConfig",
    "EditHooks",
    "EditPack",
    "EditStack",
    "Editor",
    "GenRecEditor",
    "Localisation",
    "PseudoRequests",
    "active_hooks",
    "alphaedit_solve",
    "checkpoint_identity",
    "file_sha256",
    "fixed_localisation",
    "key_covariances",
    "memit_solve",
    "null_space_basis",
    "probe_localisation",
    "pseudo_requests",
    "register_editor",
    "split_hash",
    "suspend_edits",
]
