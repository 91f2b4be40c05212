"""RQ-VAE tokenizer (TIGER): MLP encoder -> residual quantisation -> MLP decoder, in torch.

Training (on standardised or PCA-whitened inputs, float32, CPU):

- codebook l is initialised by seeded k-means on the level-l residuals of *all* training items
  through the freshly initialised encoder (the first epoch's residuals), so no code starts dead;
- each step quantises the latent z residually (nearest code per level), passes
  z + sg(z_q - z) to the decoder (straight-through estimator) and minimises
  ||x - dec||^2 + sum_l ||sg(r_l) - e_l||^2 + beta * ||r_l - sg(e_l)||^2;
- after every epoch, codes no sample chose in that epoch are re-seeded from random level-l
  residuals of the last batch (dead-code reset).

Encoding after training runs the encoder and the nearest-code search in float64 numpy, so codes
are deterministic and do not depend on batch composition. All randomness comes from
`config.seed`; the global torch RNG is left untouched.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from freshrec.semid.base import (
    SemanticTokenizer,
    apply_pca_whitening,
    faiss_kmeans,
    fit_pca_whitening,
    nearest_code,
    register_tokenizer,
)


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _RQVAE(nn.Module):
    def __init__(
        self, in_dim: int, hidden: list[int], latent: int, n_levels: int, k: int, beta: float
    ) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = _mlp([in_dim, *hidden, latent])
        self.decoder = _mlp([latent, *reversed(hidden), in_dim])
        self.codebooks = nn.Parameter(torch.zeros(n_levels, k, latent))

    def quantise(
        self, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """z float[B, latent] -> (codes long[B, L], z_q float[B, latent], vq loss, residuals)."""
        r = z
        z_q = torch.zeros_like(z)
        vq = z.new_zeros(())
        codes, residuals = [], []
        for book in self.codebooks:
            with torch.no_grad():
                rd = r.detach()
                dist = (book * book).sum(1)[None, :] - 2.0 * rd @ book.T
                idx = dist.argmin(dim=1)
            e = book[idx]
            vq = vq + F.mse_loss(e, r.detach()) + self.beta * F.mse_loss(r, e.detach())
            residuals.append(r.detach())
            codes.append(idx)
            z_q = z_q + e.detach()
            r = r - e.detach()
        return torch.stack(codes, dim=1), z_q, vq, residuals


@register_tokenizer("rqvae")
class RQVAETokenizer(SemanticTokenizer):
    """RQ-VAE SIDs. Parameters: encoder/decoder weights, `codebooks` float32[L, K, latent],
    input normalisation (standardisation or PCA whitening)."""

    params: dict[str, np.ndarray]
    history: list[dict[str, float]]

    # ------------------------------------------------------------------ input normalisation
    def _normalise(self, x: np.ndarray) -> np.ndarray:
        """float64[n, d']: model input for raw embeddings float[n, d]."""
        p = self.params
        if "pca_mean" in p:
            return apply_pca_whitening(x, p["pca_mean"], p["pca_components"], p["pca_scale"])
        return (x.astype(np.float64) - p["in_mean"].astype(np.float64)) / float(p["in_scale"][0])

    def _fit_normalisation(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.config.whiten:
            mean, comps, scale = fit_pca_whitening(x, self.config.pca_dim)
            return {"pca_mean": mean, "pca_components": comps, "pca_scale": scale}
        mean = x.astype(np.float64).mean(axis=0)
        scale = float((x.astype(np.float64) - mean).std()) or 1.0
        return {
            "in_mean": mean.astype(np.float32),
            "in_scale": np.asarray([scale], dtype=np.float32),
        }

    # ------------------------------------------------------------------ training
    def _fit(self, x: np.ndarray) -> None:
        cfg = self.config
        self.params = self._fit_normalisation(x)
        xt = torch.from_numpy(self._normalise(x).astype(np.float32))
        n, d = xt.shape
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = _RQVAE(
                d, list(cfg.hidden_dims), cfg.latent_dim, cfg.n_levels, cfg.codebook_size, cfg.beta
            )
        gen = torch.Generator().manual_seed(cfg.seed)

        # k-means initialisation of each codebook on the initial encoder's residuals.
        with torch.no_grad():
            r = model.encoder(xt).double().numpy()
            for level in range(cfg.n_levels):
                book = faiss_kmeans(r, cfg.codebook_size, 20, cfg.seed * 1009 + level)
                model.codebooks[level] = torch.from_numpy(book)
                r = r - book.astype(np.float64)[nearest_code(r, book)]

        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.history = []
        bs = min(cfg.batch_size, n)
        for _epoch in range(cfg.epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            usage = torch.zeros(cfg.n_levels, cfg.codebook_size, dtype=torch.long)
            tot = {"loss": 0.0, "recon": 0.0, "vq": 0.0}
            last_res: list[torch.Tensor] = []
            for start in range(0, n, bs):
                xb = xt[perm[start : start + bs]]
                z = model.encoder(xb)
                codes, z_q, vq, residuals = model.quantise(z)
                recon = model.decoder(z + (z_q - z).detach())
                rec = F.mse_loss(recon, xb)
                loss = rec + vq
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                w = xb.shape[0] / n
                tot["loss"] += loss.item() * w
                tot["recon"] += rec.item() * w
                tot["vq"] += vq.item() * w
                usage += F.one_hot(codes, cfg.codebook_size).sum(0)
                if xb.shape[0] == bs or not last_res:
                    last_res = residuals
            used = (usage > 0).float().mean(dim=1)
            self.history.append(tot | {f"util_{i}": float(u) for i, u in enumerate(used)})
            if cfg.dead_code_reset:
                self._reset_dead(model, usage, last_res, gen)

        sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
        self.params |= sd

    @staticmethod
    def _reset_dead(
        model: _RQVAE, usage: torch.Tensor, residuals: list[torch.Tensor], gen: torch.Generator
    ) -> None:
        """Re-seed codes unused this epoch from random residuals of the last batch."""
        with torch.no_grad():
            for level, res in enumerate(residuals):
                dead = torch.nonzero(usage[level] == 0).flatten()
                if dead.numel() == 0:
                    continue
                pick = torch.randint(0, res.shape[0], (dead.numel(),), generator=gen)
                model.codebooks[level, dead] = res[pick]

    # ------------------------------------------------------------------ encoding
    def _layers(self, prefix: str) -> list[tuple[np.ndarray, np.ndarray]]:
        names = sorted(
            {k.rsplit(".", 1)[0] for k in self.params if k.startswith(prefix + ".")},
            key=lambda s: int(s.split(".")[1]),
        )
        return [
            (
                self.params[f"{n}.weight"].astype(np.float64),
                self.params[f"{n}.bias"].astype(np.float64),
            )
            for n in names
        ]

    def _latent(self, x: np.ndarray) -> np.ndarray:
        """float64[n, latent] encoder output for raw embeddings float[n, d]."""
        h = self._normalise(x)
        layers = self._layers("encoder")
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def _encode(self, x: np.ndarray) -> np.ndarray:
        r = self._latent(x)
        books = self.params["codebooks"]
        codes = np.empty((x.shape[0], self.config.n_levels), dtype=np.int64)
        for level in range(self.config.n_levels):
            codes[:, level] = nearest_code(r, books[level])
            r = r - books[level].astype(np.float64)[codes[:, level]]
        return codes

    def reconstruct(self, emb: np.ndarray) -> np.ndarray:
        """float64[n, d'] decoder output (in the normalised input space) from the SID codes."""
        codes = self.encode(emb)
        books = self.params["codebooks"].astype(np.float64)
        h = books[np.arange(self.config.n_levels)[None, :], codes].sum(axis=1)
        layers = self._layers("decoder")
        for i, (w, b) in enumerate(layers):
            h = h @ w.T + b
            if i < len(layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    # ------------------------------------------------------------------ (de)serialisation
    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(self.params)

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        cfg = self.config
        params = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
        books = params["codebooks"]
        if books.shape != (cfg.n_levels, cfg.codebook_size, cfg.latent_dim):
            raise ValueError(
                f"codebooks shape {books.shape} != "
                f"({cfg.n_levels}, {cfg.codebook_size}, {cfg.latent_dim})"
            )
        need = (
            ["pca_mean", "pca_components", "pca_scale"] if cfg.whiten else ["in_mean", "in_scale"]
        )
        n_enc = len(cfg.hidden_dims) + 1
        need += [f"encoder.{2 * i}.{p}" for i in range(n_enc) for p in ("weight", "bias")]
        need += [f"decoder.{2 * i}.{p}" for i in range(n_enc) for p in ("weight", "bias")]
        missing = [k for k in need if k not in params]
        if missing:
            raise KeyError(f"missing arrays {missing}")
        self.params = params
        self.history = []
