"""Edit packs and the EditStack: round trips, stacking and rolling back bit-for-bit, refusing a
different base checkpoint or tokenizer, exporting merged weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_edit_trigger import _beam, random_deltas, some_requests

from freshrec.errors import CheckpointError, ConfigError, TokenizerMismatchError
from freshrec.model.checkpoint import checkpoint_identity, load_checkpoint
from freshrec.model.edit_hooks import active_hooks
from freshrec.model.edit_packs import EditPack, EditStack
from freshrec.semid.trie import SidTrie


def make_pack(model, ckpt: Path, seed: int, trigger: bool = True) -> EditPack:
    """A pack with random deltas made 'on' checkpoint `ckpt`."""
    base_hash, fingerprint = checkpoint_identity(ckpt)
    deltas = random_deltas(model, scale=0.3, seed=seed)
    manifest = {
        "format": "freshrec-edit-pack",
        "version": 1,
        "pack_id": "",
        "base": {"checkpoint_hash": base_hash, "tokenizer_fingerprint": fingerprint},
        "items": {"index": [seed, seed + 1], "id": [str(seed), str(seed + 1)]},
        "sites": [{"position": p, "layer": layer} for p, layer in sorted(deltas)],
        "method": "memit",
        "trigger": trigger,
        "seed": seed,
        "config": {"seed": seed},
        "metrics": {"reliability": {"top1": 0.5}},
        "timings": {"edit_total": 1.0},
    }
    manifest["pack_id"] = EditPack.content_id(deltas, manifest)
    grams = {
        s: torch.eye(model.ffn_out_projs()[s[1]].in_features, dtype=torch.float64) for s in deltas
    }
    requests = {"user": np.arange(3), "pos": np.arange(1, 4), "item": np.full(3, seed)}
    return EditPack(deltas, manifest, grams, requests)


def test_pack_round_trip(tmp_path, load_model, ckpt_dirs) -> None:
    model = load_model("tiger")
    pack = make_pack(model, ckpt_dirs["tiger"], seed=1)
    folder = pack.save(tmp_path / "packs" / pack.pack_id)
    assert sorted(p.name for p in folder.iterdir()) == [
        "deltas.safetensors",
        "manifest.json",
        "stats.safetensors",
    ]
    loaded = EditPack.load(folder)
    assert loaded.manifest == json.loads(json.dumps(pack.manifest))
    assert loaded.pack_id == pack.pack_id
    assert loaded.sites == pack.sites
    for s in pack.sites:
        assert torch.equal(loaded.deltas[s], pack.deltas[s].float())
        assert torch.equal(loaded.grams[s], pack.grams[s])
    for k, v in pack.requests.items():
        np.testing.assert_array_equal(loaded.requests[k], v)
    # a manifest that disagrees with the deltas is refused
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    tensors = load_file(str(bad / "deltas.safetensors"))
    tensors.pop(next(iter(tensors)))
    save_file(tensors, str(bad / "deltas.safetensors"))
    with pytest.raises(CheckpointError, match="manifest lists"):
        EditPack.load(bad)
    with pytest.raises(CheckpointError, match="manifest not found"):
        EditPack.load(tmp_path / "nothing")
    # an unknown gate, or a prefix gate without the items' SIDs, is refused
    for gate, message in (("sideways", "unknown gate 'sideways'"), ("prefix", "one SID per")):
        odd = tmp_path / f"gate-{gate}"
        shutil.copytree(folder, odd)
        manifest = json.loads((odd / "manifest.json").read_text())
        (odd / "manifest.json").write_text(json.dumps({**manifest, "gate": gate}))
        with pytest.raises(CheckpointError, match=message):
            EditPack.load(odd)


@pytest.mark.parametrize("arch", ["tiger", "causal"])
def test_stack_push_pop_restores_base_bit_for_bit(
    arch, load_model, ckpt_dirs, ml_split, ml_sids
) -> None:
    model = load_model(arch)
    _, table = ml_sids
    trie = SidTrie.from_table(table.sids, model.vocab)
    req = some_requests(ml_split, n=16, seed=5)
    base = _beam(model, ml_split, table, req, trie)
    stack = EditStack(model, ckpt_dirs[arch])
    packs = [make_pack(model, ckpt_dirs[arch], seed=s, trigger=s != 2) for s in range(3)]
    outs = []
    for pack in packs:
        stack.push(pack)
        outs.append(_beam(model, ml_split, table, req, trie))
    assert [p.pack_id for p in stack.packs] == [p.pack_id for p in packs]
    assert not torch.equal(outs[-1].scores, base.scores)
    with pytest.raises(ConfigError, match="already applied"):
        stack.push(packs[0])
    assert stack.pop().pack_id == packs[2].pack_id
    torch.testing.assert_close(_beam(model, ml_split, table, req, trie).scores, outs[1].scores)
    stack.pop()
    stack.pop()
    assert len(stack) == 0
    assert active_hooks(model) == []
    after = _beam(model, ml_split, table, req, trie)
    assert torch.equal(after.items, base.items)
    assert torch.equal(after.scores, base.scores)
    assert torch.equal(after.sids, base.sids)
    with pytest.raises(ConfigError, match="empty"):
        stack.pop()


def test_stack_refuses_other_base_or_tokenizer(tmp_path, load_model, ckpt_dirs) -> None:
    src = ckpt_dirs["tiger"]
    model = load_model("tiger")
    pack = make_pack(model, src, seed=0)
    # a different checkpoint: same architecture, one weight changed
    other = tmp_path / "other"
    shutil.copytree(src, other)
    weights = load_file(str(other / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    other_model = load_checkpoint(other)
    other_hash = checkpoint_identity(other)[0]
    stack = EditStack(other_model, other)
    with pytest.raises(CheckpointError) as err:
        stack.push(pack)
    assert pack.base_hash in str(err.value)
    assert other_hash in str(err.value)
    assert len(stack) == 0
    # same weights, different tokenizer fingerprint
    retok = tmp_path / "retok"
    shutil.copytree(src, retok)
    cfg = json.loads((retok / "config.json").read_text())
    cfg["tokenizer_fingerprint"] = "another-tokenizer"
    (retok / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokenizerMismatchError, match="another-tokenizer"):
        EditStack(load_model("tiger"), retok).push(pack)


def test_export_merged_adds_all_deltas(tmp_path, load_model, ckpt_dirs) -> None:
    model = load_model("causal")
    stack = EditStack(model, ckpt_dirs["causal"])
    packs = [make_pack(model, ckpt_dirs["causal"], seed=s) for s in (3, 4)]
    for p in packs:
        stack.push(p)
    folder = stack.export_merged(tmp_path / "merged")
    merged = load_checkpoint(folder)
    base = load_model("causal")
    for layer, (wm, wb) in enumerate(
        zip(merged.ffn_out_projs(), base.ffn_out_projs(), strict=True)
    ):
        want = wb.weight.detach().clone()
        for p in packs:
            for (_, lay), d in p.deltas.items():
                if lay == layer:
                    want += d
        torch.testing.assert_close(wm.weight, want)
    # the live model's weights are untouched
    for wl, wb in zip(model.ffn_out_projs(), base.ffn_out_projs(), strict=True):
        assert torch.equal(wl.weight, wb.weight)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["extra"]["merged_edit_packs"] == [p.pack_id for p in packs]


def test_hooks_gate_by_the_union_of_prefix_gated_packs(load_model, ckpt_dirs, ml_sids) -> None:
    from freshrec.model.edit_packs import hooks_for

    model = load_model("causal")
    table = ml_sids[1]
    packs = []
    for seed in (1, 2):
        pack = make_pack(model, ckpt_dirs["causal"], seed=seed)
        pack.manifest["gate"] = "prefix"
        pack.manifest["sids"] = table.sids[pack.items].tolist()
        packs.append(pack)
    hooks = hooks_for(model, packs)
    assert hooks.gate is not None
    want = model.vocab.prefix_keys(torch.from_numpy(table.sids[[1, 2, 2, 3]]))
    for p, keys in enumerate(hooks.gate):
        assert torch.equal(keys, torch.unique(want[:, p]))
    # a pack made without the prefix gate (older packs: no "gate" key) opens it for all
    packs.append(make_pack(model, ckpt_dirs["causal"], seed=3))
    assert packs[-1].gate == "none"
    assert hooks_for(model, packs).gate is None
