"""RQ-VAE (TIGER) and ACRQ, its anchored two-stage variant.

RQ-VAE: an MLP encoder maps an embedding to a latent z, residual codebooks quantize z layer by
layer (k-means initialised), an MLP decoder reconstructs the embedding from the quantized sum.
Gradients pass the quantizer straight through; the loss is

    ||x - dec(z_q)||^2 + sum_l ||sg(r_{l-1}) - e_l||^2 + beta * sum_l ||r_{l-1} - sg(e_l)||^2

with every sum taken over the first k(x) layers only when SARQ is on (k(x) from the head-path
priors, refreshed each epoch), so training optimises exactly the IDs that will be served.

ACRQ: stage 1 trains the whole network on head items with codebooks M_1 < ... < M_L (a head
under ``anchor_share`` of the catalog is topped up with a tail sample: ``anchor_items``). Stage 2
appends ``extension * M_l`` new codewords to each layer (``default_extension``: more where the
head is a small share of the catalog), k-means initialised on tail residuals,
and trains on tail items with everything frozen except the codebooks, whose head rows (anchors)
are zeroed in every gradient: the paper's mask 1(q_l in C_l^new). Head items keep anchor-only
codes, so adding tail or cold-start items never renumbers a head item.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from indexer.quantizers.base import Quantizer, QuantizerConfig, anchor_plan
from indexer.quantizers.rq_kmeans import kmeans
from indexer.sarq import SARQConfig, truncate
from sidcore.errors import DataError

_CHUNK = 8192


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RQVAENet(nn.Module):
    def __init__(self, in_dim: int, hidden: tuple[int, ...], latent: int, sizes: tuple[int, ...], anchors: tuple[int, ...]):
        super().__init__()
        self.encoder = _mlp([in_dim, *hidden, latent])
        self.decoder = _mlp([latent, *reversed(hidden), in_dim])
        self.codebooks = nn.ParameterList([nn.Parameter(torch.zeros(m, latent)) for m in sizes])
        self.anchors = anchors  # rows [0, anchors[l]) of layer l are head codewords

    def assign(self, r: torch.Tensor, layer: int, anchor_only: torch.Tensor | None) -> torch.Tensor:
        c = self.codebooks[layer]
        d = (r * r).sum(1, keepdim=True) - 2 * r @ c.T + (c * c).sum(1)
        a = self.anchors[layer]
        if anchor_only is not None and a < len(c):
            d[:, a:] = torch.where(anchor_only[:, None], torch.inf, d[:, a:])
        return d.argmin(1)

    def quantize(self, z: torch.Tensor, anchor_only: torch.Tensor | None = None):
        """Codes (B, L), codewords (B, L, D) and the residual each layer quantized (B, L, D)."""
        r = z
        codes, quants, residuals = [], [], []
        for layer in range(len(self.codebooks)):
            c = self.assign(r.detach(), layer, anchor_only)
            e = self.codebooks[layer][c]
            codes.append(c)
            quants.append(e)
            residuals.append(r)
            r = r - e.detach()
        return torch.stack(codes, 1), torch.stack(quants, 1), torch.stack(residuals, 1)


class RQVAE(Quantizer):
    name = "rq-vae"

    def __init__(self, cfg: QuantizerConfig, sarq: SARQConfig | None = None):
        super().__init__(cfg, sarq)
        self.net: RQVAENet | None = None

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.net.codebooks)

    # -- training -----------------------------------------------------------------------------
    def _build(self, in_dim: int, extension: tuple[int, ...]) -> None:
        torch.manual_seed(self.cfg.seed)
        sizes = tuple(m + e for m, e in zip(self.cfg.sizes, extension))
        self.net = RQVAENet(in_dim, self.cfg.hidden, self.cfg.latent_dim, sizes, tuple(self.cfg.sizes))
        self.gen = torch.Generator().manual_seed(self.cfg.seed)

    @torch.no_grad()
    def _latents(self, x: np.ndarray) -> torch.Tensor:
        return torch.cat([self.net.encoder(torch.from_numpy(x[i : i + _CHUNK])) for i in range(0, len(x), _CHUNK)])

    @torch.no_grad()
    def _init_codebooks(self, z: torch.Tensor) -> None:
        """Layer-wise k-means on the residuals of ``z``, for the anchor (head) rows of each layer."""
        r = z.clone()
        flag = torch.ones(len(z), dtype=torch.bool)
        for layer, book in enumerate(self.net.codebooks):
            a = self.net.anchors[layer]
            book[:a] = torch.from_numpy(kmeans(r.numpy(), a, self.cfg.kmeans_iters, self.cfg.seed + layer))
            r -= book[self.net.assign(r, layer, flag)]

    def _lengths(self, codes: torch.Tensor) -> torch.Tensor:
        if self.priors is None:
            return torch.full((len(codes),), len(self.net.codebooks))
        return torch.from_numpy(truncate(self.priors.prefix_information(codes.numpy()), self.budgets, self.sarq))

    def _train(self, x: np.ndarray, anchor_only: bool, head_x: np.ndarray | None, stage: str, progress: bool) -> None:
        """Minibatch training. ``head_x`` (SARQ on, stage 1): refresh path priors each epoch."""
        net, cfg = self.net, self.cfg
        full = stage != "tail"
        params = list(net.parameters()) if full else list(net.codebooks.parameters())
        opt = torch.optim.Adam(params, lr=cfg.lr)
        xt = torch.from_numpy(x)
        flag = torch.full((cfg.batch_size,), anchor_only)
        bar = tqdm(range(cfg.epochs), desc=f"{self.name} {stage}", unit="epoch", disable=not progress)
        for _ in bar:
            if head_x is not None:
                self.fit_priors(self.encode(head_x, head=np.ones(len(head_x), dtype=bool)))
            usage = [torch.zeros(len(b), dtype=torch.long) for b in net.codebooks]
            perm = torch.randperm(len(xt), generator=self.gen)
            total = 0.0
            for i in range(0, len(xt), cfg.batch_size):
                xb = xt[perm[i : i + cfg.batch_size]]
                z = net.encoder(xb)
                codes, e, res = net.quantize(z, flag[: len(xb)])
                mask = (torch.arange(len(net.codebooks)) < self._lengths(codes)[:, None]).float()
                codebook = ((((res.detach() - e) ** 2).sum(-1)) * mask).sum(1).mean()
                loss = codebook
                if full:
                    commit = ((((res - e.detach()) ** 2).sum(-1)) * mask).sum(1).mean()
                    zq = (e * mask[..., None]).sum(1)
                    recon = ((net.decoder(z + (zq - z).detach()) - xb) ** 2).sum(1).mean()
                    loss = recon + codebook + cfg.beta * commit
                opt.zero_grad(set_to_none=False)
                loss.backward()
                opt.step()
                total += loss.item() * len(xb)
                for layer in range(len(usage)):
                    usage[layer] += torch.bincount(codes[:, layer], minlength=len(usage[layer]))
                last_res = res.detach()
            if cfg.dead_code_reset:
                self._reset_dead(usage, last_res, anchor_only)
            bar.set_postfix(loss=f"{total / len(xt):.4f}")

    @torch.no_grad()
    def _reset_dead(self, usage: list[torch.Tensor], residuals: torch.Tensor, anchor_only: bool) -> None:
        """Move codewords nobody used this epoch onto residuals of the last batch."""
        for layer, book in enumerate(self.net.codebooks):
            a = self.net.anchors[layer]
            lo, hi = (0, a) if anchor_only else (a, len(book))
            dead = torch.nonzero(usage[layer][lo:hi] == 0).flatten() + lo
            if len(dead):
                pick = torch.randint(len(residuals), (len(dead),), generator=self.gen)
                noise = 1e-3 * torch.randn(len(dead), book.shape[1], generator=self.gen)
                book[dead] = residuals[pick, layer] + noise

    def _fit(self, x: np.ndarray, head: np.ndarray, progress: bool) -> None:
        self._build(x.shape[1], (0,) * self.cfg.num_layers)
        self._check_sizes(len(x), "items")
        self._init_codebooks(self._latents(x))
        self._train(x, True, x[head] if self.sarq else None, "joint", progress)

    def _check_sizes(self, n: int, what: str) -> None:
        for layer, m in enumerate(self.cfg.sizes):
            if m > n:
                raise DataError(f"codebook size {m} at layer {layer + 1} exceeds the {n} {what} that train it")

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: np.ndarray, head: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        head = np.zeros(len(x), dtype=bool) if head is None else np.asarray(head, dtype=bool)
        out = []
        for i in range(0, len(x), _CHUNK):
            z = self.net.encoder(torch.from_numpy(x[i : i + _CHUNK]))
            codes, _, _ = self.net.quantize(z, torch.from_numpy(head[i : i + _CHUNK]))
            out.append(codes)
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros((0, len(self.sizes)), np.int64)

    @torch.no_grad()
    def reconstruct(self, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(codes), _CHUNK):
            c = torch.from_numpy(codes[i : i + _CHUNK])
            keep = torch.arange(c.shape[1]) < torch.from_numpy(lengths[i : i + _CHUNK])[:, None]
            zq = sum(
                torch.where(keep[:, l, None], self.net.codebooks[l][c[:, l]], 0.0) for l in range(c.shape[1])
            )
            out.append(self.net.decoder(zq))
        return torch.cat(out).numpy()

    def codebook_vectors(self) -> list[np.ndarray]:
        return [c.detach().numpy().astype(np.float32) for c in self.net.codebooks]

    # -- persistence --------------------------------------------------------------------------
    def _tensors(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.net.state_dict().items()}

    def _meta(self) -> dict:
        return {"in_dim": self.net.encoder[0].in_features, "anchors": list(self.net.anchors)}

    def _load_tensors(self, tensors: dict[str, np.ndarray], meta: dict) -> None:
        ext = tuple(s - a for s, a in zip(meta["sizes"], meta["anchors"]))
        self._build(meta["in_dim"], ext)
        self.net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})


class ACRQ(RQVAE):
    name = "acrq"
    anchored = True

    def _fit(self, x: np.ndarray, head: np.ndarray, progress: bool) -> None:
        cfg = self.cfg
        anchors, share = anchor_plan(cfg, head)
        anchor_x, tail_x = x[anchors], x[~anchors]
        extension = tuple(min(round(share * m), len(tail_x)) for m in cfg.sizes)
        self._build(x.shape[1], extension)
        self._check_sizes(len(anchor_x), "anchor (head) items")

        # Stage 1: the head curriculum (and any tail sample that tops it up) learns the anchor
        # manifold; SARQ's path priors always come from the head proper.
        self._init_codebooks(self._latents(anchor_x))
        self._train(anchor_x, True, x[head] if self.sarq else None, "head", progress)
        if self.sarq is not None:
            # Stage 2 truncates tail paths with the head priors, never with tail statistics.
            self.fit_priors(self.encode(x[head], head=np.ones(int(head.sum()), dtype=bool)))
        if not len(tail_x) or not any(extension):
            return

        # Stage 2: freeze everything but the extension rows of each codebook.
        for p in self.net.parameters():
            p.requires_grad_(False)
        for layer, book in enumerate(self.net.codebooks):
            book.requires_grad_(True)
            book.register_hook(_anchor_mask(self.net.anchors[layer]))
        z_tail = self._latents(tail_x)
        self._init_tail(z_tail)
        self._train(tail_x, False, None, "tail", progress)

    @torch.no_grad()
    def _init_tail(self, z: torch.Tensor) -> None:
        r = z.clone()
        for layer, book in enumerate(self.net.codebooks):
            a = self.net.anchors[layer]
            if len(book) > a:
                book[a:] = torch.from_numpy(kmeans(r.numpy(), len(book) - a, self.cfg.kmeans_iters, self.cfg.seed + 100 + layer))
            r -= book[self.net.assign(r, layer, None)]


def _anchor_mask(num_anchor: int):
    def hook(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[:num_anchor] = 0
        return grad

    return hook
