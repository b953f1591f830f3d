"""CUDA back end of :func:`crossent.torch.linear_cross_entropy`: Triton kernels.

The front end (``crossent.torch``) reduces every option (class weights, label smoothing,
``ignore_index``, dense probability targets, reductions, z-loss) to a few per-row numbers and
calls the two functions here for CUDA tensors. With ``raw_ij = x_i·w_j + bias_j`` and
``z_ij = softcap(raw_ij)`` (``softcap(t) = cap·tanh(t/cap)``, identity when ``softcap`` is None):

.. math::

    \\mathrm{lse}_i = \\log \\sum_j e^{z_{ij}}, \\qquad
    \\mathrm{dot}_i = a_i z_{i,k_i} + b_i \\sum_j c_j z_{ij} + \\sum_j P_{ij} z_{ij}

    G_{ij} = \\bigl[r_i e^{z_{ij} - \\mathrm{lse}_i}
             - g_i (a_i \\delta_{j k_i} + b_i c_j + P_{ij})\\bigr] \\,
             \\mathrm{softcap}'(\\mathrm{raw}_{ij}),
    \\qquad dX = G W,\\; dW = G^\\top X,\\; db = \\textstyle\\sum_i G_i

with ``r`` = ``row_coef`` and ``g`` = ``go`` computed by the front end, and
``softcap'(t) = 1 − tanh²(t/cap)``. The (n, C) scores never exist whole: both kernels work on
(row block × class block) tiles of the scores, computed by a tiled GEMM over the features
with float32 accumulation, and keep only per-row numbers (forward) or the gradients
(backward) in memory.

Forward. Grid (row blocks, class splits): a program walks its share of the class blocks with
an online log-sum-exp (running max ``m`` and sum ``s``, rescaled by ``exp(m_old − m_new)``)
and the three dot terms, and writes one partial ``(lse, dot)`` per row; the partials of the
splits are combined by ``torch.logsumexp`` / ``sum`` (deterministic). Splitting the classes
keeps the GPU busy when there are few row blocks (8192 rows are 64 blocks of 128).

Backward (recompute, as Cut Cross-Entropy). Grid over (row block, class block) tiles, ordered
in groups of row blocks so that a group's rows stay in L2: a program recomputes its score
tile, forms the ``G`` tile in registers, and adds ``G W_blk`` into dX, ``G_blkᵀ X`` into dW and
the column sums of ``G`` into db with float32 atomic adds. Why atomics: the alternative,
a program per class block looping over all row blocks, must hold a (BLOCK_N, d) float32
accumulator — 2 MiB at d = 4096, far beyond registers — so it would read and write its dW
rows in memory once per row block (BLOCK_M/4 flop per byte, well under an H200's ratio) or
recompute the scores d/BLOCK_K times. Atomics compute each ``G`` tile once; the price is that
float32 addition order, hence the last bits of dX/dW/db, can vary from run to run.

dtypes: float32, bfloat16 and float16 inputs; ``tl.dot`` in the input dtype with float32
accumulation. For float32 the products are exact IEEE (``input_precision="ieee"``) unless
``allow_tf32=True``. In the backward the ``G`` tile is rounded to the input dtype before its
two products, as every bf16 GEMM backward does; dX is returned in ``x.dtype``, dW and db in
float32.

Under ``TRITON_INTERPRET=1`` (CPU tensors, for tests) small fixed blocks are used, and
bfloat16 tiles are widened to float32 before ``tl.dot``: the interpreter multiplies bfloat16
as raw 16-bit integers. The widening is exact and so are bf16 × bf16 products in float32, so
only the summation order differs from a GPU bf16 dot. For the same reason the ``G`` tile is
rounded to bfloat16 by bit arithmetic there (the interpreter's cast truncates; the GPU's
rounds to nearest even).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["triton_backward", "triton_forward"]


def _interpreting() -> bool:
    """Whether Triton runs kernels in its NumPy interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------- kernels


@triton.jit
def _tanh(t):
    """tanh(t) = sign(t)·(1 − e^{−2|t|}) / (1 + e^{−2|t|}); no overflow for any t."""
    e = tl.exp(-2.0 * tl.abs(t))
    th = (1.0 - e) / (1.0 + e)
    return tl.where(t < 0, -th, th)


@triton.jit
def _round_bf16(t):
    """Round float32 to the nearest bfloat16 (ties to even), kept in float32.

    Used under the interpreter only, whose float32 → bfloat16 cast truncates.
    """
    bits = t.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _score_tile(
    x_ptr, w_ptr, bias_ptr, rows, cols, row_mask, col_mask, d,
    stride_xm, stride_xk, stride_wn, stride_wk,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """raw = X[rows] W[cols]ᵀ + bias[cols], a (BLOCK_M, BLOCK_N) float32 tile."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, d, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < d
        x_tile = tl.load(  # (BLOCK_M, BLOCK_K)
            x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk,
            mask=row_mask[:, None] & k_mask[None, :], other=0.0,
        )  # fmt: skip
        w_tile = tl.load(  # (BLOCK_N, BLOCK_K)
            w_ptr + cols[:, None] * stride_wn + ks[None, :] * stride_wk,
            mask=col_mask[:, None] & k_mask[None, :], other=0.0,
        )  # fmt: skip
        if DOT_F32:
            x_tile = x_tile.to(tl.float32)
            w_tile = w_tile.to(tl.float32)
        acc = tl.dot(x_tile, tl.trans(w_tile), acc, input_precision=PRECISION)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        acc += bias[None, :]
    return acc


@triton.jit
def _forward_kernel(
    x_ptr, w_ptr, bias_ptr, target_ptr, a_ptr, b_ptr, cw_ptr, p_ptr, lse_part_ptr, dot_part_ptr,
    n, n_classes, d, blocks_per_split, softcap,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_pm, stride_pn,
    HAS_BIAS: tl.constexpr, HAS_CW: tl.constexpr, HAS_P: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, DOT_F32: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """Partial (lse, dot) of one row block over one split of the class blocks."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    row_mask = rows < n
    target = tl.load(target_ptr + rows, mask=row_mask, other=0)
    a = tl.load(a_ptr + rows, mask=row_mask, other=0.0)
    b = tl.load(b_ptr + rows, mask=row_mask, other=0.0)

    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    dot = tl.zeros((BLOCK_M,), dtype=tl.float32)
    n_blocks = tl.cdiv(n_classes, BLOCK_N)
    first = pid_s * blocks_per_split
    last = tl.minimum(first + blocks_per_split, n_blocks)
    for blk in range(first, last):
        cols = blk * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
        col_mask = cols < n_classes
        z = _score_tile(
            x_ptr, w_ptr, bias_ptr, rows, cols, row_mask, col_mask, d,
            stride_xm, stride_xk, stride_wn, stride_wk,
            HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION,
        )  # fmt: skip  # (BLOCK_M, BLOCK_N) raw scores
        if HAS_SOFTCAP:
            z = softcap * _tanh(z / softcap)
        z = tl.where(col_mask[None, :], z, 0.0)

        # online log-sum-exp over the classes
        z_max = tl.where(col_mask[None, :], z, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(z_max, axis=1))
        exps = tl.exp(z_max - new_max[:, None])  # 0 on padded columns
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(exps, axis=1)
        run_max = new_max

        # a_i z_{i,k_i} + b_i Σ_j c_j z_ij + Σ_j P_ij z_ij   (padded columns hold z = 0)
        is_target = cols[None, :] == target[:, None]
        dot += a * tl.sum(tl.where(is_target, z, 0.0), axis=1)
        if HAS_CW:
            cw = tl.load(cw_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
            dot += b * tl.sum(z * cw[None, :], axis=1)
        else:
            dot += b * tl.sum(z, axis=1)
        if HAS_P:
            p = tl.load(
                p_ptr + rows[:, None] * stride_pm + cols[None, :] * stride_pn,
                mask=row_mask[:, None] & col_mask[None, :], other=0.0,
            ).to(tl.float32)  # fmt: skip
            dot += tl.sum(p * z, axis=1)

    lse = run_max + tl.log(run_sum)
    tl.store(lse_part_ptr + pid_s * n + rows, lse, mask=row_mask)
    tl.store(dot_part_ptr + pid_s * n + rows, dot, mask=row_mask)


@triton.jit
def _backward_kernel(
    x_ptr, w_ptr, bias_ptr, target_ptr, a_ptr, b_ptr, cw_ptr, p_ptr,
    lse_ptr, row_coef_ptr, go_ptr, dx_ptr, dw_ptr, db_ptr,
    n, n_classes, d, softcap,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_pm, stride_pn,
    HAS_BIAS: tl.constexpr, HAS_CW: tl.constexpr, HAS_P: tl.constexpr,
    HAS_SOFTCAP: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
    NEED_DB: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, DOT_F32: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One (row block, class block) tile of G, added into dX, dW and db by atomics.

    The adds are ``relaxed``: only their sum matters, read after the kernel ends.
    """
    # grouped order: GROUP_M row blocks sweep the class blocks together (L2 reuse of W)
    pid = tl.program_id(0)
    n_row_blocks = tl.cdiv(n, BLOCK_M)
    n_col_blocks = tl.cdiv(n_classes, BLOCK_N)
    group_size = GROUP_M * n_col_blocks
    first_row_block = (pid // group_size) * GROUP_M
    group_rows = tl.minimum(n_row_blocks - first_row_block, GROUP_M)
    pid_m = first_row_block + (pid % group_size) % group_rows
    pid_n = (pid % group_size) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    row_mask = rows < n
    col_mask = cols < n_classes
    raw = _score_tile(
        x_ptr, w_ptr, bias_ptr, rows, cols, row_mask, col_mask, d,
        stride_xm, stride_xk, stride_wn, stride_wk,
        HAS_BIAS, BLOCK_M, BLOCK_N, BLOCK_K, DOT_F32, PRECISION,
    )  # fmt: skip  # (BLOCK_M, BLOCK_N)
    if HAS_SOFTCAP:
        tanh_raw = _tanh(raw / softcap)
        z = softcap * tanh_raw
    else:
        z = raw

    target = tl.load(target_ptr + rows, mask=row_mask, other=0)
    a = tl.load(a_ptr + rows, mask=row_mask, other=0.0)
    b = tl.load(b_ptr + rows, mask=row_mask, other=0.0)
    lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
    row_coef = tl.load(row_coef_ptr + rows, mask=row_mask, other=0.0)
    go = tl.load(go_ptr + rows, mask=row_mask, other=0.0)

    # target mass a δ + b c + P of the tile
    mass = tl.where(cols[None, :] == target[:, None], a[:, None], 0.0)
    if HAS_CW:
        cw = tl.load(cw_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
        mass += b[:, None] * cw[None, :]
    else:
        mass += b[:, None]
    if HAS_P:
        mass += tl.load(
            p_ptr + rows[:, None] * stride_pm + cols[None, :] * stride_pn,
            mask=row_mask[:, None] & col_mask[None, :], other=0.0,
        ).to(tl.float32)  # fmt: skip
    probs = tl.exp(z - lse[:, None])
    grad = row_coef[:, None] * probs - go[:, None] * mass  # (BLOCK_M, BLOCK_N) G tile
    if HAS_SOFTCAP:
        grad = grad * (1.0 - tanh_raw * tanh_raw)
    grad = tl.where(row_mask[:, None] & col_mask[None, :], grad, 0.0)

    if NEED_DB:
        tl.atomic_add(db_ptr + cols, tl.sum(grad, axis=0), mask=col_mask, sem="relaxed")
    if DOT_F32:  # interpreter: round G to the input dtype, keep float32 storage
        if x_ptr.dtype.element_ty == tl.bfloat16:
            grad_in = _round_bf16(grad)
        else:
            grad_in = grad.to(x_ptr.dtype.element_ty).to(tl.float32)
    else:
        grad_in = grad.to(x_ptr.dtype.element_ty)
    if NEED_DX:  # dX[rows] += G W[cols]
        for k0 in range(0, d, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_mask = ks < d
            w_tile = tl.load(  # (BLOCK_N, BLOCK_K)
                w_ptr + cols[:, None] * stride_wn + ks[None, :] * stride_wk,
                mask=col_mask[:, None] & k_mask[None, :], other=0.0,
            )  # fmt: skip
            if DOT_F32:
                w_tile = w_tile.to(tl.float32)
            dx_tile = tl.dot(grad_in, w_tile, input_precision=PRECISION)  # (BLOCK_M, BLOCK_K)
            tl.atomic_add(
                dx_ptr + rows[:, None] * d + ks[None, :], dx_tile,
                mask=row_mask[:, None] & k_mask[None, :], sem="relaxed",
            )  # fmt: skip
    if NEED_DW:  # dW[cols] += G[:, cols]ᵀ X[rows]
        grad_t = tl.trans(grad_in)  # (BLOCK_N, BLOCK_M)
        for k0 in range(0, d, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            k_mask = ks < d
            x_tile = tl.load(  # (BLOCK_M, BLOCK_K)
                x_ptr + rows[:, None] * stride_xm + ks[None, :] * stride_xk,
                mask=row_mask[:, None] & k_mask[None, :], other=0.0,
            )  # fmt: skip
            if DOT_F32:
                x_tile = x_tile.to(tl.float32)
            dw_tile = tl.dot(grad_t, x_tile, input_precision=PRECISION)  # (BLOCK_N, BLOCK_K)
            tl.atomic_add(
                dw_ptr + cols[:, None] * d + ks[None, :], dw_tile,
                mask=col_mask[:, None] & k_mask[None, :], sem="relaxed",
            )  # fmt: skip


# --------------------------------------------------------------------------- launch helpers


def _blocks(dtype: torch.dtype) -> dict[str, int]:
    """Tile sizes and launch options: a heuristic until GPU timings tune it.

    Under the interpreter small blocks keep the tests fast (``tl.dot`` needs 16 at least).
    On the GPU: 128 × 64 score tiles, chosen by compiling both kernels for sm_90 (Triton
    3.9, no GPU needed) and reading the register use: 128 × 128 tiles spill 0.3–3 KiB of
    stack a thread; 128 × 64 with 32 (16-bit) or 16 (float32) features a step spill at most
    40 bytes without options and under 0.8 KiB with bias, class weights, dense targets and
    softcap. Narrower class blocks double the dX atomics, though: only timings can settle it.
    """
    if _interpreting():
        return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 1}
    block_k = 16 if dtype == torch.float32 else 32
    return {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": block_k, "num_warps": 8, "num_stages": 4}


def _target_programs(device: torch.device) -> int:
    """How many programs keep the device busy: 4 per multiprocessor (4 under interpretation)."""
    if device.type != "cuda":
        return 4
    return 4 * torch.cuda.get_device_properties(device).multi_processor_count


def _precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``tl.dot``'s input precision: exact IEEE float32 unless TF32 is asked for."""
    if dtype == torch.float32 and not allow_tf32:
        return "ieee"
    return "tf32"  # Triton's default; ignored for 16-bit operands


def _check(x: torch.Tensor, weight: torch.Tensor) -> None:
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x (n, d) and weight (C, d) must agree: got {tuple(x.shape)}, {tuple(weight.shape)}"
        )
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or weight.dtype != x.dtype:
        raise TypeError(
            f"x and weight must share float32/bfloat16/float16: {x.dtype}, {weight.dtype}"
        )


def _common_args(x, weight, bias, target, a, b, cw, P):
    """Contiguous operands and the (pointer, flag) pairs of the optional ones."""
    x = x.contiguous()
    weight = weight.contiguous()
    target = target.to(torch.int64).contiguous()
    a = a.to(torch.float32).contiguous()
    b = b.to(torch.float32).contiguous()
    has_bias, has_cw, has_p = bias is not None, cw is not None, P is not None
    bias_arg = bias.contiguous() if has_bias else a  # unused dummy pointers when absent
    cw_arg = cw.to(torch.float32).contiguous() if has_cw else a
    p_arg = P if has_p else a
    p_strides = (P.stride(0), P.stride(1)) if has_p else (0, 0)
    return x, weight, target, a, b, bias_arg, cw_arg, p_arg, p_strides, has_bias, has_cw, has_p


# --------------------------------------------------------------------------- back-end contract


def triton_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    cw: torch.Tensor | None,
    P: torch.Tensor | None,
    softcap: float | None,
    *,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row log-sum-exp and target dot of the scores, never holding the (n, C) scores.

    Parameters
    ----------
    x : (n, d) float32, bfloat16 or float16 tensor
    weight : (C, d) tensor of x's dtype
    bias : (C,) tensor or None
    target : (n,) int64 class indices (any valid index where ``a_i = 0``)
    a, b : (n,) float32 masses on the target class and on the class weights
    cw : (C,) float32 class weights or None (all ones)
    P : (n, C) dense probability-target mass (float32 or x's dtype) or None
    softcap : float or None; ``z = cap·tanh(raw/cap)``
    allow_tf32 : bool, default False
        float32 only: let ``tl.dot`` round its operands to TF32 (faster, ~1e-3 relative).

    Returns
    -------
    lse : (n,) float32
        ``log Σ_j exp(z_ij)``.
    dot : (n,) float32
        ``a_i z_{i,k_i} + b_i Σ_j cw_j z_ij + Σ_j P_ij z_ij``.
    """
    _check(x, weight)
    n, d = x.shape
    n_classes = weight.shape[0]
    x, weight, target, a, b, bias_arg, cw_arg, p_arg, p_strides, has_bias, has_cw, has_p = (
        _common_args(x, weight, bias, target, a, b, cw, P)
    )
    if n == 0:
        empty = torch.empty((0,), dtype=torch.float32, device=x.device)
        return empty, empty.clone()
    cfg = _blocks(x.dtype)
    block_m, block_n = cfg["BLOCK_M"], cfg["BLOCK_N"]
    n_row_blocks = triton.cdiv(n, block_m)
    n_col_blocks = triton.cdiv(n_classes, block_n)
    # split the class blocks so that row blocks × splits fill the device
    want_splits = max(1, triton.cdiv(_target_programs(x.device), n_row_blocks))
    blocks_per_split = triton.cdiv(n_col_blocks, min(want_splits, n_col_blocks))
    n_splits = triton.cdiv(n_col_blocks, blocks_per_split)
    lse_part = torch.empty((n_splits, n), dtype=torch.float32, device=x.device)  # (S, n)
    dot_part = torch.empty((n_splits, n), dtype=torch.float32, device=x.device)  # (S, n)
    _forward_kernel[(n_row_blocks, n_splits)](
        x, weight, bias_arg, target, a, b, cw_arg, p_arg, lse_part, dot_part,
        n, n_classes, d, blocks_per_split, float(softcap) if softcap is not None else 1.0,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), *p_strides,
        HAS_BIAS=has_bias, HAS_CW=has_cw, HAS_P=has_p, HAS_SOFTCAP=softcap is not None,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=cfg["BLOCK_K"],
        DOT_F32=_interpreting() and x.dtype != torch.float32,
        PRECISION=_precision(x.dtype, allow_tf32),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )  # fmt: skip
    if n_splits == 1:
        return lse_part[0], dot_part[0]
    return torch.logsumexp(lse_part, dim=0), dot_part.sum(dim=0)


def triton_backward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    cw: torch.Tensor | None,
    P: torch.Tensor | None,
    softcap: float | None,
    lse: torch.Tensor,
    row_coef: torch.Tensor,
    go: torch.Tensor,
    need_dx: bool,
    need_dw: bool,
    need_db: bool,
    *,
    allow_tf32: bool = False,
    dweight_dtype: torch.dtype | None = None,
    max_scratch_bytes: int = 256 * 2**20,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of the loss through the scores, recomputing the score tiles.

    ``G_ij = [row_coef_i·exp(z_ij − lse_i) − go_i·(a_i δ_{j k_i} + b_i cw_j + P_ij)]
    · softcap'(raw_ij)`` with ``softcap'(t) = 1 − tanh²(t/cap)``; then
    ``dx = G·weight``, ``dweight = Gᵀ·x``, ``dbias = Σ_i G_i``, accumulated in float32.

    Parameters
    ----------
    x, weight, bias, target, a, b, cw, P, softcap
        As in :func:`triton_forward`.
    lse : (n,) float32
        From :func:`triton_forward`.
    row_coef, go : (n,) float32
        Per-row coefficients of the softmax and of the target mass.
    need_dx, need_dw, need_db : bool
        Which gradients to compute (the others are returned as None).
    allow_tf32 : bool, default False
        As in :func:`triton_forward`.
    dweight_dtype : torch.dtype, optional
        dtype of the returned dweight; None (the contract) means float32. Another dtype
        (the weight's, say) bounds the extra memory: the classes are done in chunks whose
        float32 accumulator holds at most ``max_scratch_bytes``, each chunk cast into the
        output when its rows are complete (a (C, d) float32 dW is 2 GiB at 128256 × 4096).
    max_scratch_bytes : int, default 256 MiB
        Size of that float32 accumulator.

    Returns
    -------
    dx : (n, d) tensor in x's dtype, or None
    dweight : (C, d) float32 (or ``dweight_dtype``), or None
    dbias : (C,) float32, or None (also None without a bias)

    Notes
    -----
    dX, dW and db are summed with float32 atomic adds, so their last bits may differ between
    runs on a GPU (the order of the adds is not fixed).
    """
    _check(x, weight)
    n, d = x.shape
    n_classes = weight.shape[0]
    need_db = need_db and bias is not None
    x, weight, target, a, b, bias_arg, cw_arg, p_arg, p_strides, has_bias, has_cw, has_p = (
        _common_args(x, weight, bias, target, a, b, cw, P)
    )
    lse = lse.to(torch.float32).contiguous()
    row_coef = row_coef.to(torch.float32).contiguous()
    go = go.to(torch.float32).contiguous()
    device = x.device
    dx32 = torch.zeros((n, d), dtype=torch.float32, device=device) if need_dx else None
    db32 = torch.zeros((n_classes,), dtype=torch.float32, device=device) if need_db else None
    cfg = _blocks(x.dtype)
    block_m, block_n = cfg["BLOCK_M"], cfg["BLOCK_N"]
    # dW: float32 whole, or a float32 scratch per chunk of classes cast into dweight_dtype
    chunk = n_classes
    dw_out = dw_scratch = None
    if need_dw:
        out_dtype = torch.float32 if dweight_dtype is None else dweight_dtype
        dw_out = torch.zeros((n_classes, d), dtype=out_dtype, device=device)  # (C, d)
        if out_dtype == torch.float32:
            dw_scratch = dw_out
        else:
            rows_fit = max(1, max_scratch_bytes // (4 * max(d, 1)))
            chunk = min(n_classes, max(block_n, rows_fit // block_n * block_n))
            dw_scratch = torch.empty((chunk, d), dtype=torch.float32, device=device)
    if not (need_dx or need_dw or need_db) or n == 0:
        return (dx32.to(x.dtype) if dx32 is not None else None), dw_out, db32
    for start in range(0, n_classes, chunk):
        stop = min(start + chunk, n_classes)
        width = stop - start
        if dw_scratch is not None and dw_scratch is not dw_out:
            dw_scratch.zero_()  # float32 output: one chunk, dw_scratch is dw_out
        grid = (triton.cdiv(n, block_m) * triton.cdiv(width, block_n),)
        _backward_kernel[grid](
            x, weight[start:stop], bias_arg[start:stop] if has_bias else bias_arg,
            target - start if start else target, a, b,
            cw_arg[start:stop] if has_cw else cw_arg, p_arg[:, start:stop] if has_p else p_arg,
            lse, row_coef, go,
            dx32 if need_dx else a, dw_scratch if need_dw else a,
            db32[start:stop] if db32 is not None else a,
            n, width, d, float(softcap) if softcap is not None else 1.0,
            x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), *p_strides,
            HAS_BIAS=has_bias, HAS_CW=has_cw, HAS_P=has_p, HAS_SOFTCAP=softcap is not None,
            NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=cfg["BLOCK_K"], GROUP_M=8,
            DOT_F32=_interpreting() and x.dtype != torch.float32,
            PRECISION=_precision(x.dtype, allow_tf32),
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )  # fmt: skip
        if dw_out is not None and dw_scratch is not None and dw_scratch is not dw_out:
            dw_out[start:stop].copy_(dw_scratch[:width])
    dx = dx32.to(x.dtype) if dx32 is not None else None
    return dx, dw_out, db32
