"""FFN variants that replace timm's ``Mlp`` in a transformer block: the stock MLP and compact cFFN.

``mlp``: ``fc2(GELU(fc1(x)))``, the ViT feed-forward network, with timm's parameter names
(``fc1``, ``fc2``) so that a stock state dict loads unchanged.

``cffn``: the compact FFN of Xu et al. (arXiv 2306.10875). Only the abstract is available; it says
the hidden-to-output projection is factorized and re-parameterization strengthens it during
training. Our interpretation, stated plainly:

- ``fc2`` (hidden H -> output C_out) is replaced by a rank-r product ``expand @ reduce``
  (H -> r -> C_out), r = ``rank`` or ``round(rank_ratio * min(H, C_out))`` (default ratio 0.5).
- During training ``reduce`` is over-parameterized RepVGG-style: ``branches`` parallel
  ``Linear(H, r, bias=False) + BatchNorm`` branches whose outputs are summed. Every branch is
  linear at inference (BatchNorm uses its running statistics), so :meth:`RepFactorizedLinear.reparameterize`
  folds them into one ``Linear(H, r, bias=False)`` (the BatchNorm shifts go into ``expand``'s bias):
  the deployed form is two plain matmuls. ``model.eval()`` alone changes nothing: the unmerged
  module in eval mode computes exactly what the merged one does.

Cost (MACs per token, the counter's convention; params likewise without biases):
    mlp:  C_in*H + H*C_out
    cffn: C_in*H + r*(H + C_out)            (after merging)
Saving of the FFN = (H*C_out - r*(H + C_out)) / (H*(C_in + C_out)); factorizing pays only for
r < H*C_out / (H + C_out). With ViT's H = 4C and r = C/2 (the default): 1.5C^2 of 8C^2, i.e. the FFN
has 18.75% fewer MACs and weights, inside the paper's claimed 10-20% range.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from vitspeed.attention.registry import coerce_option

__all__ = ["Mlp", "CompactFFN", "RepFactorizedLinear", "build_ffn", "list_ffns", "ffn_options", "cffn_rank"]


class Mlp(nn.Module):
    """The plain ViT FFN ``fc2(GELU(fc1(x)))`` with timm ``Mlp``'s parameter names."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc2(GELU(fc1(x))) over the last dimension of ``x``."""
        return self.fc2(self.act(self.fc1(x)))


class _LinearBN(nn.Module):
    """``BatchNorm1d(Linear(x))`` over the last dimension of a (..., features) token tensor."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """BatchNorm1d(Linear(x)) over the last dimension of ``x`` (..., in_features)."""
        y = self.linear(x)
        return self.bn(y.reshape(-1, y.shape[-1])).reshape(y.shape)

    @torch.no_grad()
    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (out, in) and bias (out,) of the equivalent affine map with eval-mode statistics."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return self.linear.weight * scale[:, None], bn.bias - bn.running_mean * scale


class RepFactorizedLinear(nn.Module):
    """A rank-``rank`` factorized linear map ``expand(reduce(x))``, re-parameterizable.

    Training form: ``expand(sum_i BN_i(A_i x))`` with ``branches`` parallel branches.
    Deployed form (after :meth:`reparameterize`): ``expand(reduce(x))`` with ``reduce`` a bias-free
    ``Linear(in, rank)`` and ``expand`` a ``Linear(rank, out)``. Both forms give the same output
    in eval mode.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, branches: int = 2) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.branches = nn.ModuleList([_LinearBN(in_features, rank) for _ in range(branches)])
        self.reduce: nn.Linear | None = None
        self.expand = nn.Linear(rank, out_features)

    @property
    def merged(self) -> bool:
        """True once the training branches have been folded into ``reduce``."""
        return self.reduce is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """expand(reduce(x)) once merged, else expand(sum of the training branches of x)."""
        if self.reduce is not None:
            return self.expand(self.reduce(x))
        y = self.branches[0](x)
        for branch in self.branches[1:]:
            y = y + branch(x)
        return self.expand(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the branches (eval-mode BatchNorm) into one bias-free ``reduce``, in place."""
        if self.reduce is not None:
            return
        weight = torch.zeros_like(self.branches[0].linear.weight)
        bias = torch.zeros(self.rank, dtype=weight.dtype, device=weight.device)
        for branch in self.branches:
            w, b = branch.folded()
            weight += w
            bias += b
        reduce = nn.Linear(self.in_features, self.rank, bias=False).to(weight.device, weight.dtype)
        reduce.weight.copy_(weight)
        # expand(W x + b) = expand.W W x + (expand.W b + expand.b)
        self.expand.bias.add_(self.expand.weight @ bias)
        self.reduce = reduce
        del self.branches
        self.branches = nn.ModuleList()


class CompactFFN(nn.Module):
    """cFFN: ``fc2(GELU(fc1(x)))`` with ``fc2`` a re-parameterizable rank-r factorization.

    ``fc2`` is a :class:`RepFactorizedLinear` (``in_features``/``out_features`` attributes like a
    Linear). :meth:`reparameterize` folds the training branches in place; :meth:`merge` returns a
    merged copy and leaves this module as it is.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 rank: int | None = None, rank_ratio: float = 0.5, branches: int = 2) -> None:
        super().__init__()
        out_features = out_features or in_features
        r = cffn_rank(hidden_features, out_features, rank, rank_ratio)
        if int(branches) != branches or branches < 1:
            raise ValueError(f"cffn needs branches >= 1 (an integer), got {branches!r}")
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = RepFactorizedLinear(hidden_features, out_features, r, int(branches))

    @property
    def rank(self) -> int:
        """Rank r of the factorized hidden-to-output projection."""
        return self.fc2.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fc2(GELU(fc1(x))) with the factorized fc2, over the last dimension of ``x``."""
        return self.fc2(self.act(self.fc1(x)))

    def reparameterize(self) -> "CompactFFN":
        """Fold the training branches into the plain two-matmul form, in place; returns self."""
        self.fc2.reparameterize()
        return self

    def merge(self) -> "CompactFFN":
        """A merged (deployable) copy; this module keeps its training branches."""
        return copy.deepcopy(self).reparameterize()


def cffn_rank(hidden_features: int, out_features: int, rank: int | None = None, rank_ratio: float = 0.5) -> int:
    """The factorization rank: ``rank`` if given, else ``round(rank_ratio * min(hidden, out))``.

    Raises ``ValueError`` unless 1 <= rank <= min(hidden_features, out_features).
    """
    limit = min(hidden_features, out_features)
    if rank is None:
        if not 0 < rank_ratio <= 1:
            raise ValueError(f"cffn rank_ratio must be in (0, 1], got {rank_ratio!r}")
        rank = max(1, round(rank_ratio * limit))
    if int(rank) != rank or not 1 <= rank <= limit:
        raise ValueError(f"cffn rank must be an integer in [1, {limit}] (min of hidden {hidden_features} "
                         f"and output {out_features} features), got {rank!r}")
    return int(rank)


_FFNS: dict[str, tuple[type[nn.Module], dict[str, Any], str]] = {
    "mlp": (Mlp, {}, "fc1 -> GELU -> fc2, timm's ViT MLP"),
    "cffn": (CompactFFN, {"rank": None, "rank_ratio": 0.5, "branches": 2},
             "compact FFN: fc2 factorized to rank r (default min(H, C)/2), RepVGG-style branches merged for inference"),
}


def list_ffns() -> list[str]:
    """Names of the FFN variants."""
    return list(_FFNS)


def ffn_options(name: str) -> dict[str, Any]:
    """Default options of FFN ``name``."""
    return dict(_spec(name)[1])


def _spec(name: str) -> tuple[type[nn.Module], dict[str, Any], str]:
    try:
        return _FFNS[name]
    except KeyError:
        raise ValueError(f"unknown FFN {name!r}; valid choices: {', '.join(_FFNS)}") from None


def _coerce(name: str, key: str, value: Any, default: Any) -> Any:
    # CLI values arrive as strings.
    if not isinstance(value, str):
        return value
    kind = int if key in ("rank", "branches") else type(default)
    return coerce_option(value, kind, key, f"FFN {name!r}")


def build_ffn(name: str, in_features: int, hidden_features: int, out_features: int | None = None,
              **options: Any) -> nn.Module:
    """Construct FFN ``name`` (``mlp`` or ``cffn``) mapping in_features -> hidden -> out_features.

    Unknown names and options raise ``ValueError`` listing the valid ones.
    """
    cls, defaults, _ = _spec(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for FFN {name!r}; "
                         f"valid options: {', '.join(defaults) or 'none'}")
    merged = {**defaults, **{k: _coerce(name, k, v, defaults[k]) for k, v in options.items()}}
    return cls(in_features, hidden_features, out_features, **merged)
