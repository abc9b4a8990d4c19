"""Feature geometry: class separation R² and linear CKA (Kornblith et al.). Plain torch functions.

Class separation (the paper's R²) with cosine distance ``1 - cos(x, y)`` between feature vectors::

    d_within = 1/K  sum_k 1/N_k²        sum_{m,n in class k} (1 - cos(x_m, x_n))
    d_total  = 1/K² sum_{j,k} 1/(N_j N_k) sum_{m in j, n in k} (1 - cos(x_m, x_n))
    R² = 1 - d_within / d_total

For L2-normalised features ``cos(x, y) = x·y``, so with ``mu_k`` the mean normalised feature of class ``k``
the double sums collapse to ``d_within = 1 - mean_k |mu_k|²`` and ``d_total = 1 - |mean_k mu_k|²``: the
sums of normalised features per class are all a validation run has to keep (no pairwise matrix).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def class_sums(features: torch.Tensor, labels: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of L2-normalised ``[N, D]`` features and per-class counts (labels outside range dropped)."""
    flat = F.normalize(features.detach().flatten(1).float(), dim=1)  # float32: some devices lack float64
    labels = labels.reshape(-1).long()
    valid = (labels >= 0) & (labels < classes)
    index = torch.where(valid, labels, torch.zeros_like(labels))  # masked, not dropped: no host read
    sums = torch.zeros(classes, flat.shape[1], device=flat.device)
    sums.index_add_(0, index, flat * valid.unsqueeze(1))
    counts = torch.zeros(classes, device=flat.device)
    counts.index_add_(0, index, valid.float())
    return sums, counts


def class_separation(sums: torch.Tensor, counts: torch.Tensor) -> float:
    """R² from per-class sums of L2-normalised features (see the module docstring); classes without samples
    are left out. NaN with fewer than two classes or when every feature points the same way."""
    present = counts > 0
    if int(present.sum()) < 2:
        return float("nan")
    means = sums[present].double() / counts[present].double().unsqueeze(1)
    within = 1.0 - float((means * means).sum(dim=1).mean())
    centre = means.mean(dim=0)
    total = 1.0 - float(centre @ centre)
    if total <= 1e-12:
        return float("nan")
    return 1.0 - within / total


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centered kernel alignment between two representations of the same ``N`` examples.

    ``x``: ``[N, D1]``, ``y``: ``[N, D2]`` (further dimensions are flattened). With column-centred ``X`` and
    ``Y``: ``|Yᵀ X|_F² / (|Xᵀ X|_F |Yᵀ Y|_F)``, in [0, 1]; 1 for identical representations (also up to an
    orthogonal transform or an isotropic scale). NaN when either is constant.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must describe the same examples; got {x.shape[0]} and {y.shape[0]} rows.")
    a = x.detach().flatten(1).double()
    b = y.detach().flatten(1).to(a.device).double()
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(b.T @ a) ** 2
    norm = torch.linalg.matrix_norm(a.T @ a) * torch.linalg.matrix_norm(b.T @ b)
    if float(norm) == 0.0:
        return float("nan")
    return float(cross / norm)
