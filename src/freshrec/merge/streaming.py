"""Apply a `MergeRecipe` to checkpoint folders, one tensor key at a time.

`merge_checkpoints` reads, for each key, that key from every model (and the base) with
`safetensors.safe_open`, merges it and keeps only the merged tensor: peak memory is about one
output model plus one key's tensors across the inputs, not N models. The inputs are opened per
key (a header parse) because safetensors tensors are views of the file's mmap: closing the
handles after each key keeps the inputs' pages out of the process's RSS. (glibc's dynamic mmap
threshold can still leave freed per-key temporaries in the heap, so RSS may grow by up to ~2x
the output; `MALLOC_MMAP_THRESHOLD_=1048576` in the environment avoids that.)
`merge_in_memory` loads whole state dicts and runs the same per-key code; it is the reference
the streaming merge is tested against (bit-for-bit).

Checks before anything is merged (all inputs, base included):
- equal `tokenizer_fingerprint` (else `TokenizerMismatchError`): SID token embedding rows are
  only meaningful under one tokenizer;
- equal `arch`, `model` config and `vocab` (else `CheckpointError`);
- equal key sets and shapes, float keys float everywhere (else `CheckpointError` naming the key).

Non-float tensors (int buffers, masks) are not merged: they must be equal across all inputs and
are copied from the base (or the first model). Float results are cast to `recipe.dtype`, or to
the dtype of the reference tensor (base, else first model) when the recipe sets none. DARE masks
use a generator seeded with `seed + crc32(key)`, so results do not depend on key order.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

import freshrec
from freshrec.atomic import atomic_dir, write_json
from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError
from freshrec.merge.recipe import MergeRecipe, load_recipe
from freshrec.model.checkpoint import CONFIG, WEIGHTS, read_checkpoint_config

__all__ = [
    "MergeReport",
    "merge_checkpoints",
    "merge_in_memory",
    "merge_tensor",
    "read_config",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# safetensors dtype names of floating-point tensors.
_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass
class MergeReport:
    """What `merge_checkpoints` did. `peak_rss_delta_bytes`: peak growth of the process's
    resident memory (psutil RSS, sampled after each key is loaded and after it is merged, so
    transient peaks inside a method are missed) over its value at the start."""

    method: str
    out_dir: Path
    keys: int
    merged_keys: int
    copied_keys: int
    seconds: float
    peak_rss_delta_bytes: int
    output_bytes: int
    inputs: list[str] = field(default_factory=list)


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _open(stack: ExitStack, ckpt: Path) -> Any:
    """`safe_open(ckpt/model.safetensors)` entered on `stack`; CheckpointError if unreadable."""
    path = ckpt / WEIGHTS
    try:
        return stack.enter_context(safe_open(path, framework="pt"))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read safetensors ({exc})") from None


def _read_layout(ckpt: Path) -> dict[str, tuple[tuple[int, ...], bool]]:
    """`{key: (shape, is_float)}` from the safetensors header, without reading tensors."""
    with ExitStack() as stack:
        handle = _open(stack, ckpt)
        layout = {}
        for k in handle.keys():  # noqa: SIM118 - safe_open handles are not mappings
            sl = handle.get_slice(k)
            layout[k] = (tuple(sl.get_shape()), sl.get_dtype() in _FLOAT_CODES)
    return layout


def read_config(ckpt: Path) -> dict[str, Any]:
    """Read and sanity-check `ckpt/config.json` (and that `ckpt/model.safetensors` exists)."""
    for p in (ckpt / CONFIG, ckpt / WEIGHTS):
        if not p.is_file():
            raise CheckpointError(f"{ckpt}: not a freshrec checkpoint, missing {p.name}")
    return read_checkpoint_config(ckpt)


def _inputs(recipe: MergeRecipe) -> list[tuple[str, Path]]:
    """(role, path) of every input: the base first (if any), then the models."""
    out = [("base", recipe.base_model)] if recipe.base_model is not None else []
    return out + [(f"models[{i}]", p) for i, p in enumerate(recipe.model_paths())]


def _check_configs(inputs: list[tuple[str, Path]], configs: list[dict[str, Any]]) -> None:
    (ref_role, ref_path), ref = inputs[0], configs[0]
    for (role, path), cfg in zip(inputs[1:], configs[1:], strict=True):
        if cfg["tokenizer_fingerprint"] != ref["tokenizer_fingerprint"]:
            raise TokenizerMismatchError(
                f"cannot merge checkpoints built with different SID tokenizers: {ref_role} "
                f"{ref_path} has tokenizer_fingerprint {ref['tokenizer_fingerprint']!r} but "
                f"{role} {path} has {cfg['tokenizer_fingerprint']!r} (SID token embeddings are "
                "only meaningful under one tokenizer)"
            )
        for name in ("arch", "model", "vocab"):
            if cfg[name] != ref[name]:
                raise CheckpointError(
                    f"cannot merge different architectures: '{name}' of {role} {path} is "
                    f"{json.dumps(cfg[name], sort_keys=True)} but {ref_role} {ref_path} has "
                    f"{json.dumps(ref[name], sort_keys=True)}"
                )


def _check_layouts(
    inputs: list[tuple[str, Path]], layouts: list[dict[str, tuple[tuple[int, ...], bool]]]
) -> list[str]:
    """Compare `{key: (shape, is_float)}` of every input with the first; return sorted keys."""
    (ref_role, ref_path), ref = inputs[0], layouts[0]
    for (role, path), layout in zip(inputs[1:], layouts[1:], strict=True):
        for a, b, ra, pa, rb, pb in (
            (ref, layout, ref_role, ref_path, role, path),
            (layout, ref, role, path, ref_role, ref_path),
        ):
            extra = sorted(a.keys() - b.keys())
            if extra:
                more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
                raise CheckpointError(
                    f"key '{extra[0]}'{more} is in {ra} {pa} but not in {rb} {pb}; "
                    "merged checkpoints must have identical keys"
                )
        for key in sorted(ref):
            (s_ref, f_ref), (s, f) = ref[key], layout[key]
            if s != s_ref:
                raise CheckpointError(
                    f"key '{key}' has shape {list(s)} in {role} {path} but {list(s_ref)} in "
                    f"{ref_role} {ref_path}"
                )
            if f != f_ref:
                raise CheckpointError(
                    f"key '{key}' is floating-point in one input and not in another "
                    f"({role} {path} vs {ref_role} {ref_path})"
                )
    return sorted(ref)


def merge_tensor(
    recipe: MergeRecipe,
    key: str,
    base: Tensor | None,
    tensors: list[Tensor],
    input_names: list[str] | None = None,
) -> Tensor:
    """Merge one key per `recipe` (`tensors[i]` from `recipe.models[i]`); all shape `S`.

    Non-float tensors must be equal across all inputs and are returned from the base/first model.
    """
    ref = base if base is not None else tensors[0]
    if not ref.is_floating_point():
        everything = ([base] if base is not None else []) + tensors
        names = input_names or [f"input {i}" for i in range(len(everything))]
        for name, t in zip(names[1:], everything[1:], strict=True):
            if t.dtype != ref.dtype or not torch.equal(t, ref):
                raise CheckpointError(
                    f"non-float tensor '{key}' ({ref.dtype}) differs between {names[0]} and "
                    f"{name}; non-float tensors are copied, not merged, and must be identical"
                )
        return ref.clone()  # own memory: do not keep an input file's mmap alive
    out = recipe.method.merge(base, tensors, recipe.merge_args(key))
    dtype = _DTYPES[recipe.dtype] if recipe.dtype is not None else ref.dtype
    return out.to(dtype).contiguous()


def _as_recipe(recipe: MergeRecipe | str | Path) -> MergeRecipe:
    return recipe if isinstance(recipe, MergeRecipe) else load_recipe(recipe)


def _progress_printer(enabled: bool, total: int) -> Callable[[int, str], None]:
    step = max(1, total // 20)
    tty = sys.stderr.isatty()

    def show(done: int, key: str) -> None:
        if not enabled or (not tty and done % step and done != total):
            return
        lead = "\r" if tty else ""
        end = "\n" if (not tty or done == total) else ""
        sys.stderr.write(f"{lead}merge: {done}/{total} keys ({key}){end}")
        sys.stderr.flush()

    return show


def merge_in_memory(recipe: MergeRecipe | str | Path) -> dict[str, Tensor]:
    """Load every input fully and merge; returns the merged state dict (test reference)."""
    recipe = _as_recipe(recipe)
    inputs = _inputs(recipe)
    configs = [read_config(p) for _, p in inputs]
    _check_configs(inputs, configs)
    states = [load_file(p / WEIGHTS) for _, p in inputs]
    layouts = [{k: (tuple(t.shape), t.is_floating_point()) for k, t in s.items()} for s in states]
    keys = _check_layouts(inputs, layouts)
    names = [f"{role} {p}" for role, p in inputs]
    has_base = recipe.base_model is not None
    out = {}
    for key in keys:
        base = states[0][key] if has_base else None
        tensors = [s[key] for s in states[int(has_base) :]]
        out[key] = merge_tensor(recipe, key, base, tensors, names)
    return out


def _output_config(
    recipe: MergeRecipe,
    inputs: list[tuple[str, Path]],
    configs: list[dict[str, Any]],
    seconds: float,
    n_keys: int,
) -> dict[str, Any]:
    """The merged checkpoint's config.json: the first model's, this freshrec version, and
    `extra.merge` = resolved recipe, inputs and timing."""
    cfg = copy.deepcopy(configs[int(recipe.base_model is not None)])
    cfg["freshrec_version"] = freshrec.__version__
    extra = dict(cfg.get("extra") or {})
    extra["merge"] = {
        "recipe": recipe.summary(),
        "inputs": [
            {
                "role": role,
                "path": str(p),
                "tokenizer_fingerprint": c["tokenizer_fingerprint"],
                "freshrec_version": c.get("freshrec_version"),
            }
            for (role, p), c in zip(inputs, configs, strict=True)
        ],
        "timing": {"merge_seconds": round(seconds, 4), "keys": n_keys},
        "created_unix": int(time.time()),
    }
    cfg["extra"] = extra
    return cfg


def merge_checkpoints(
    recipe: MergeRecipe | str | Path,
    out_dir: str | Path,
    progress: bool = True,
    overwrite: bool = True,
) -> MergeReport:
    """Stream-merge the recipe's checkpoints into checkpoint folder `out_dir` (atomic write).

    `out_dir/config.json` is the first model's config with `freshrec_version` set to this
    version and `extra.merge` = resolved recipe, inputs and timing.
    """
    start = time.perf_counter()
    rss0 = peak = _rss()
    recipe = _as_recipe(recipe)
    out_dir = Path(out_dir)
    inputs = _inputs(recipe)
    out_resolved = out_dir.resolve()
    for role, p in inputs:
        # atomic_dir replaces out_dir as a whole: it must neither be nor contain an input.
        if p == out_resolved or out_resolved in p.parents:
            what = "is" if p == out_resolved else "contains"
            raise ConfigError(
                f"out_dir {out_dir} {what} the {role} input {p}; write somewhere else"
            )
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"out_dir {out_dir} already exists (pass overwrite=True to replace)")
    configs = [read_config(p) for _, p in inputs]
    _check_configs(inputs, configs)
    names = [f"{role} {p}" for role, p in inputs]
    has_base = recipe.base_model is not None

    keys = _check_layouts(inputs, [_read_layout(p) for _, p in inputs])
    show = _progress_printer(progress, len(keys))
    merged: dict[str, Tensor] = {}
    n_copied = 0
    for i, key in enumerate(keys):
        # Open the inputs per key (only the header is parsed): the tensors are views of the
        # files' mmaps, so closing after each key unmaps them and RSS holds only this key.
        with ExitStack() as stack:
            loaded = [_open(stack, p).get_tensor(key) for _, p in inputs]
        peak = max(peak, _rss())
        base = loaded[0] if has_base else None
        merged[key] = merge_tensor(recipe, key, base, loaded[int(has_base) :], names)
        n_copied += not merged[key].is_floating_point()
        del loaded, base
        peak = max(peak, _rss())
        show(i + 1, key)

    output_bytes = sum(t.numel() * t.element_size() for t in merged.values())
    cfg = _output_config(recipe, inputs, configs, time.perf_counter() - start, len(keys))
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        save_file(merged, str(tmp / WEIGHTS), metadata={"format": "pt"})
        write_json(tmp / CONFIG, cfg)
    peak = max(peak, _rss())
    return MergeReport(
        method=recipe.merge_method,
        out_dir=out_dir,
        keys=len(keys),
        merged_keys=len(keys) - n_copied,
        copied_keys=n_copied,
        seconds=time.perf_counter() - start,
        peak_rss_delta_bytes=max(0, peak - rss0),
        output_bytes=output_bytes,
        inputs=[str(p) for _, p in inputs],
    )
