"""The row-chunked PyTorch back end of :func:`crossent.torch.linear_cross_entropy` (any device).

It is the same chunked algorithm as the NumPy hot path :mod:`crossent.objective`: rows of
``x`` are taken a chunk at a time, the chunk's scores ``x_c Wᵀ + bias`` are made, reduced to
what the loss needs and, for the gradient, turned in place into ``G_c`` and multiplied back
into ``dx_c = G_c W`` and ``dW += G_cᵀ x_c`` while the chunk is at hand. The ``(n, C)``
scores never exist whole: one chunk holds about :data:`SCORES_BYTES` of them.

The back-end contract (shared with the Triton kernels of ``crossent.torch._triton``), for
``x`` ``(n, d)``, ``weight`` ``(C, d)``, ``bias`` ``(C,)`` or None and the target mass of
:mod:`crossent.loss` factored per row as ``u_i = a_i e_{k_i} + b_i cw + P_i``:

.. math::

    z_{ij} = \\mathrm{softcap}(x_i \\cdot w_j + \\mathrm{bias}_j), \\quad
    \\mathrm{lse}_i = \\log \\sum_j e^{z_{ij}}, \\quad
    \\mathrm{dot}_i = a_i z_{i k_i} + b_i \\sum_j cw_j z_{ij} + \\sum_j P_{ij} z_{ij},

    G_{ij} = \\big[c_i\\, e^{z_{ij} - \\mathrm{lse}_i}
             - g_i (a_i \\delta_{j k_i} + b_i cw_j + P_{ij})\\big]\\, \\mathrm{softcap}'(raw_{ij}),

with ``c`` = ``row_coef`` and ``g`` = ``go``; ``dx = G W``, ``dweight = Gᵀ x``,
``dbias = Σ_i G_i``. :func:`backward` is the vector-Jacobian product of :func:`forward`
with ``row_coef = ∂/∂lse`` and ``go = −∂/∂dot``. ``softcap(t) = cap · tanh(t / cap)``.

Precision: the matrix products run in the input dtype; the scores are widened to float32
(float64 input stays float64) for the log-sum-exp, the row sums, ``G`` and the ``dW``/``db``
accumulation, whatever the input dtype. ``dx`` is returned in ``x``'s dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SCORES_BYTES", "backward", "chunk_rows", "forward", "forward_backward"]

# Scores of one chunk: 40 MiB (float32: 328 rows at 32000 classes). Larger chunks run the
# products faster (W is re-read once per chunk: 2048 x 1024 x 32000 float32 fwd+bwd took
# 10.2 / 8.0 / 6.6 / 5.9 CPU-seconds at 8 / 16 / 32 / 64 MiB on 2 cores), and cost as much
# memory: 40 MiB keeps fwd+bwd within dW + 64 MiB of extra memory (dx, one chunk, BLAS
# workspace: MKL's for x_c Wᵀ is ~5 MiB per thread) up to 4 threads.
SCORES_BYTES = 40 * 1024 * 1024


def accum_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 input, else float32: the dtype of lse, dot, G, dW and db."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_rows(n_rows: int, n_classes: int, dtype: torch.dtype) -> int:
    """Rows per chunk: at most :data:`SCORES_BYTES` of accumulation-dtype scores (at least 1
    row), balanced so that the last chunk is not a sliver."""
    itemsize = torch.empty((), dtype=accum_dtype(dtype)).element_size()
    most = max(1, SCORES_BYTES // max(1, n_classes * itemsize))
    n_chunks = -(-n_rows // most)  # ceil
    return max(1, -(-n_rows // max(1, n_chunks)))


def _scores(
    x_c: Tensor, weight: Tensor, bias: Tensor | None, softcap: float | None, out: Tensor
) -> Tensor | None:
    """Write the chunk's scores ``z`` into ``out`` (accumulation dtype, ``(r, C)``).

    Returns ``softcap'(raw) = 1 − (z / cap)²`` as a new ``(r, C)`` tensor, None without a cap.
    """
    if x_c.dtype == out.dtype:
        if bias is None:
            torch.mm(x_c, weight.T, out=out)
        else:
            torch.addmm(bias, x_c, weight.T, out=out)
    else:  # bf16/fp16: product in the input dtype (as the naive computation), widened here
        out.copy_(torch.nn.functional.linear(x_c, weight, bias))
    if softcap is None:
        return None
    out.div_(softcap).tanh_()  # tanh(raw / cap)
    slope = 1.0 - out.square()  # (r, C) softcap'(raw)
    out.mul_(softcap)
    return slope


def _dot(z: Tensor, target: Tensor, a: Tensor, b: Tensor, cw: Tensor | None, P: Tensor | None):
    """``a_i z_{i k_i} + b_i Σ_j cw_j z_ij + Σ_j P_ij z_ij`` for one chunk, shape ``(r,)``."""
    dot = a * z.gather(1, target[:, None])[:, 0]
    if bool(torch.any(b != 0)):
        dot += b * (z.sum(1) if cw is None else z @ cw)
    if P is not None:
        dot += (P * z).sum(1)
    return dot


def _subtract_target_(
    grad: Tensor,
    target: Tensor,
    a: Tensor,
    b: Tensor,
    cw: Tensor | None,
    P: Tensor | None,
    go: Tensor,
) -> None:
    """``grad −= go_i (a_i δ_{j k_i} + b_i cw_j + P_ij)`` in place, for one chunk."""
    grad.scatter_add_(1, target[:, None], (-go * a)[:, None])
    gb = go * b
    if bool(torch.any(gb != 0)):
        if cw is None:
            grad.sub_(gb[:, None])
        else:
            grad.addr_(gb, cw, alpha=-1.0)
    if P is not None:
        grad.addcmul_(go[:, None], P, value=-1.0)


def _accumulate(
    grad: Tensor,
    x_c: Tensor,
    weight: Tensor,
    rows: slice,
    dx: Tensor | None,
    dweight: Tensor | None,
    dbias: Tensor | None,
) -> None:
    """``dx[rows] = G W``, ``dweight += Gᵀ x_c``, ``dbias += Σ_i G_i`` for one chunk's ``G``."""
    if dx is not None:  # .to() is grad itself when the dtypes agree
        torch.mm(grad.to(x_c.dtype), weight, out=dx[rows])
    if dweight is not None:
        dweight.addmm_(grad.T, x_c.to(grad.dtype))
    if dbias is not None:
        dbias += grad.sum(0)


def _buffers(x: Tensor, weight: Tensor, need_dx: bool, need_dw: bool, need_db: bool):
    C, acc = weight.shape[0], accum_dtype(x.dtype)
    dx = torch.empty_like(x) if need_dx else None  # (n, d)
    dweight = torch.zeros(weight.shape, dtype=acc, device=x.device) if need_dw else None
    dbias = torch.zeros(C, dtype=acc, device=x.device) if need_db else None
    return dx, dweight, dbias


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    a: Tensor,
    b: Tensor,
    cw: Tensor | None,
    P: Tensor | None,
    softcap: float | None,
) -> tuple[Tensor, Tensor]:
    """``(lse (n,), dot (n,))`` of the contract, in the accumulation dtype."""
    n, C, acc = x.shape[0], weight.shape[0], accum_dtype(x.dtype)
    lse = torch.empty(n, dtype=acc, device=x.device)
    dot = torch.empty(n, dtype=acc, device=x.device)
    step = chunk_rows(n, C, x.dtype)
    buf = torch.empty((min(step, n), C), dtype=acc, device=x.device)  # (r, C) scores
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        z = buf[: rows.stop - start]
        _scores(x[rows], weight, bias, softcap, out=z)
        p_c = None if P is None else P[rows]
        dot[rows] = _dot(z, target[rows], a[rows], b[rows], cw, p_c)
        lse[rows] = torch.logsumexp(z, dim=1)
    return lse, dot


def backward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    a: Tensor,
    b: Tensor,
    cw: Tensor | None,
    P: Tensor | None,
    softcap: float | None,
    lse: Tensor,
    row_coef: Tensor,
    go: Tensor,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """``(dx, dweight, dbias)`` of the contract, recomputing each chunk's scores."""
    n, C, acc = x.shape[0], weight.shape[0], accum_dtype(x.dtype)
    dx, dweight, dbias = _buffers(x, weight, need_dx, need_dw, need_db)
    if not (need_dx or need_dw or need_db):
        return dx, dweight, dbias
    lse, row_coef, go = lse.to(acc), row_coef.to(acc), go.to(acc)
    step = chunk_rows(n, C, x.dtype)
    buf = torch.empty((min(step, n), C), dtype=acc, device=x.device)  # (r, C) scores, then G
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        grad = buf[: rows.stop - start]
        slope = _scores(x[rows], weight, bias, softcap, out=grad)
        grad.sub_(lse[rows, None]).exp_().mul_(row_coef[rows, None])  # c_i softmax_ij
        p_c = None if P is None else P[rows]
        _subtract_target_(grad, target[rows], a[rows], b[rows], cw, p_c, go[rows])
        if slope is not None:
            grad.mul_(slope)
        _accumulate(grad, x[rows], weight, rows, dx, dweight, dbias)
    return dx, dweight, dbias


def forward_backward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    a: Tensor,
    b: Tensor,
    cw: Tensor | None,
    P: Tensor | None,
    softcap: float | None,
    row_total: Tensor,
    z_loss: float,
    row_scale: Tensor,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """:func:`forward` and :func:`backward` in one sweep: 3 matrix products instead of 4.

    For a loss ``Σ_i s_i L_i`` with ``L_i = U_i lse_i − dot_i + zl lse_i²`` (``s`` =
    ``row_scale``, ``U`` = ``row_total``, ``zl`` = ``z_loss``): each chunk's
    ``row_coef = s (U + 2 zl lse)`` and ``go = s`` are known once its log-sum-exp is, so the
    gradient is made while the chunk's scores are still at hand. Returns
    ``(lse, dot, dx, dweight, dbias)``; the gradients are those of upstream gradient 1.
    """
    n, C, acc = x.shape[0], weight.shape[0], accum_dtype(x.dtype)
    lse = torch.empty(n, dtype=acc, device=x.device)
    dot = torch.empty(n, dtype=acc, device=x.device)
    dx, dweight, dbias = _buffers(x, weight, need_dx, need_dw, need_db)
    row_total, row_scale = row_total.to(acc), row_scale.to(acc)
    step = chunk_rows(n, C, x.dtype)
    buf = torch.empty((min(step, n), C), dtype=acc, device=x.device)  # (r, C) scores, then G
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        grad = buf[: rows.stop - start]
        slope = _scores(x[rows], weight, bias, softcap, out=grad)
        p_c = None if P is None else P[rows]
        dot[rows] = _dot(grad, target[rows], a[rows], b[rows], cw, p_c)
        shift = grad.amax(1)  # (r,) max shift
        norm = grad.sub_(shift[:, None]).exp_().sum(1)  # (r,) Σ_j exp(z_ij − max)
        lse_c = shift + norm.log()
        lse[rows] = lse_c
        s = row_scale[rows]
        row_coef = s * (row_total[rows] + 2.0 * z_loss * lse_c)
        grad.mul_((row_coef / norm)[:, None])  # c_i softmax_ij
        _subtract_target_(grad, target[rows], a[rows], b[rows], cw, p_c, s)
        if slope is not None:
            grad.mul_(slope)
        _accumulate(grad, x[rows], weight, rows, dx, dweight, dbias)
    return lse, dot, dx, dweight, dbias
