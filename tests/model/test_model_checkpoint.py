"""Checkpoint round trip, fingerprint check, clear errors on missing/corrupt files."""

from __future__ import annotations

import json

import pytest
import torch

import freshrec
from freshrec.errors import CheckpointError, TokenizerMismatchError
from freshrec.model.batches import history_tokens
from freshrec.model.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from freshrec.recommend.beam_search import beam_search
from model_helpers import ARCHS, VOCAB, fresh_model, random_histories


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_reproduces_logits(arch, tmp_path, sid_tokens, trie, trained):
    model = trained[arch]
    folder = save_checkpoint(model, tmp_path / "ckpt", "fp-123", extra={"epoch": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    cfg = read_checkpoint_config(folder)
    assert cfg["arch"] == arch
    assert cfg["tokenizer_fingerprint"] == "fp-123"
    assert cfg["freshrec_version"] == freshrec.__version__
    assert cfg["extra"] == {"epoch": 3}
    assert cfg["vocab"] == VOCAB.to_dict()
    loaded = load_checkpoint(folder, expect_fingerprint="fp-123")
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert not loaded.training
    sd, lsd = model.state_dict(), loaded.state_dict()
    assert sd.keys() == lsd.keys()
    assert all(torch.equal(sd[k], lsd[k]) for k in sd)
    hist = history_tokens(random_histories(4, 5), sid_tokens)
    targets = torch.as_tensor(sid_tokens[:4])
    with torch.no_grad():
        assert torch.equal(model.sid_log_probs(hist, targets), loaded.sid_log_probs(hist, targets))
    a = beam_search(model, hist, trie, beam_size=5, top_k=5)
    b = beam_search(loaded, hist, trie, beam_size=5, top_k=5)
    assert torch.equal(a.items, b.items)
    assert torch.equal(a.scores, b.scores)


def test_tied_embeddings_stay_tied(tmp_path):
    for arch in ARCHS:
        loaded = load_checkpoint(save_checkpoint(fresh_model(arch), tmp_path / arch, "fp"))
        hf = loaded.t5 if arch == "tiger" else loaded.llama
        assert hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()


def test_fingerprint_mismatch_raises(tmp_path):
    folder = save_checkpoint(fresh_model("tiger"), tmp_path / "ckpt", "fp-old")
    with pytest.raises(TokenizerMismatchError, match=r"fp-old.*fp-new"):
        load_checkpoint(folder, expect_fingerprint="fp-new")
    load_checkpoint(folder)  # no expectation: loads


def test_overwrite_is_atomic_replacement(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(fresh_model("tiger"), folder, "a")
    save_checkpoint(fresh_model("causal"), folder, "b")
    assert read_checkpoint_config(folder)["arch"] == "causal"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folders left


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(tmp_path / "nowhere")
    folder = save_checkpoint(fresh_model("causal"), tmp_path / "ckpt", "fp")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(folder)
    weights.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        read_checkpoint_config(folder)


def test_weights_of_another_config_are_rejected(tmp_path):
    folder = save_checkpoint(fresh_model("tiger"), tmp_path / "ckpt", "fp")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["d_ff"] = 128
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(folder)
    cfg["model"]["no_such_field"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(folder)
