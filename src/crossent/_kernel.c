/* crossent's compiled softmax cross-entropy kernels (loaded by crossent/_kernel.py via ctypes).
 *
 * For a (rows, C) C-contiguous block of logits z (float32 or float64), class indices k and
 * per-row weights s (float64), per row i:
 *
 *     m   = max_j z_ij                               one read (also detects +inf / NaN)
 *     e_j = exp(z_ij - m)                            vectorised polynomial exp
 *     N   = sum_j e_j                                accumulated in float64
 *     L_i = s_i (log N + m - z_ik)                   float64
 *     g_ij = scale s_i (e_j / N - [j == k])          the gradient row, written while in cache
 *
 * Rows of weight s_i <= 0 contribute nothing and get zero gradient rows whatever they hold.
 * A row of positive weight whose log-sum-exp is not finite (all -inf, a +inf or a NaN entry)
 * is "undefined": the kernels stop there and return its index in *bad_row (else -1), and
 * Python raises the ValueError.
 *
 * The functions use no Python API (ctypes calls them with the GIL released, so row blocks
 * run in parallel on threads); Python.h is included only for the PyInit stub that lets
 * setuptools build and link this file as an extension module on every platform.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Function multiversioning: AVX-512 / AVX2+FMA / baseline clones chosen at load time by
 * ifunc, so the portable build still uses wide vectors where the CPU has them. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && \
    !defined(CROSSENT_NO_CLONES)
#define CE_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CE_CLONES
#endif

#if defined(__GNUC__)
#define CE_INLINE static inline __attribute__((always_inline))
#else
#define CE_INLINE static inline
#endif

#if defined(_OPENMP) || defined(__GNUC__)
#define CE_PRAGMA(x) _Pragma(#x)
#else
#define CE_PRAGMA(x)
#endif
#define CE_SIMD_MAX CE_PRAGMA(omp simd reduction(max : m))
#define CE_SIMD_SUM CE_PRAGMA(omp simd reduction(+ : norm))

typedef int64_t idx_t;

/* ---------------------------------------------------------------- exp, float32
 * x <= 0 (after the max shift). n = round(x log2 e) by the 1.5 * 2^23 trick, whose low
 * mantissa bits are n itself; r = x - n ln2 (Cody-Waite, ln2_hi exact in n ln2_hi);
 * exp(r) by its Taylor polynomial of degree 7 on |r| <= ln2 / 2 (truncation < 0.1 ulp);
 * times 2^n built in the exponent bits. Below ln(FLT_MIN) (and -inf) the result is 0. */
CE_INLINE float ce_expf(float x) {
    const float lo = -87.33654475f; /* ln(FLT_MIN) */
    float xc = x < lo ? lo : x;
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    float t = xc * 1.44269504088896341f + magic;
    float n = t - magic;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t ti, mi;
    memcpy(&ti, &t, 4);
    memcpy(&mi, &magic, 4);
    int32_t bits = (ti - mi + 127) << 23; /* 2^n, n in [-126, 0] */
    float scale;
    memcpy(&scale, &bits, 4);
    float y = p * scale;
    return x < lo ? 0.0f : y;
}

/* ---------------------------------------------------------------- exp, float64
 * The same with the 1.5 * 2^52 trick, fdlibm's ln2 split and a degree-13 polynomial
 * (truncation < 0.02 ulp); 0 below ln(DBL_MIN). */
CE_INLINE double ce_exp(double x) {
    const double lo = -708.3964185322641; /* ln(DBL_MIN) */
    double xc = x < lo ? lo : x;
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double t = xc * 1.4426950408889634074 + magic;
    double n = t - magic;
    double r = xc - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    int64_t ti, mi;
    memcpy(&ti, &t, 8);
    memcpy(&mi, &magic, 8);
    int64_t bits = (ti - mi + 1023) << 52; /* 2^n, n in [-1022, 0] */
    double scale;
    memcpy(&scale, &bits, 8);
    double y = p * scale;
    return x < lo ? 0.0 : y;
}

/* ---------------------------------------------------------------- log, float64
 * For the row normalisers (positive, normal, finite): x = 2^k m with m in [sqrt(1/2),
 * sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172, by its series to
 * s^23 (truncation < 1e-18); k ln2 with fdlibm's split. Integer work only in unsigned
 * 64-bit adds and logical shifts, so it vectorises on AVX2 (no 64-bit arithmetic shift). */
CE_INLINE double ce_log(double x) {
    uint64_t bits, kbits;
    memcpy(&bits, &x, 8);
    uint64_t u = bits - UINT64_C(0x3fe6a09e667f3bcd) + (UINT64_C(1024) << 52);
    uint64_t kb = u >> 52;                                    /* k + 1024 */
    uint64_t mbits = bits - (kb << 52) + (UINT64_C(1024) << 52); /* m = x / 2^k */
    double m;
    memcpy(&m, &mbits, 8);
    kbits = UINT64_C(0x4330000000000000) | kb; /* 2^52 + k + 1024 as a double */
    double kd;
    memcpy(&kd, &kbits, 8);
    kd -= 4503599627371520.0; /* 2^52 + 1024 */
    double f = m - 1.0;
    double s = f / (2.0 + f);
    double s2 = s * s;
    double p = 1.0 / 23.0;
    p = p * s2 + 1.0 / 21.0;
    p = p * s2 + 1.0 / 19.0;
    p = p * s2 + 1.0 / 17.0;
    p = p * s2 + 1.0 / 15.0;
    p = p * s2 + 1.0 / 13.0;
    p = p * s2 + 1.0 / 11.0;
    p = p * s2 + 1.0 / 9.0;
    p = p * s2 + 1.0 / 7.0;
    p = p * s2 + 1.0 / 5.0;
    p = p * s2 + 1.0 / 3.0;
    double log_m = f - s * (f - 2.0 * s2 * p); /* 2s(1 + s2 p) = f - s (f - 2 s2 p) */
    return kd * 6.93147180369123816490e-01 + (log_m + kd * 1.90821492927058770002e-10);
}

/* log of n normalisers, in a loop that vectorises */
CE_INLINE void ce_logs(const double *x, double *out, idx_t n) {
    for (idx_t r = 0; r < n; ++r) out[r] = ce_log(x[r]);
}

CE_CLONES void ce_log_f64(const double *x, double *out, idx_t n) { ce_logs(x, out, n); }

/* ---------------------------------------------------------------- the kernels, per dtype
 * CE_DEFINE(suffix, real, exp) instantiates, for `real` in {float, double}:
 *
 *   ce_exp_<s>(x, out, n)                      out = exp(x), x <= 0 (for the accuracy tests)
 *   ce_loss_grad_<s>(in, out, rows, C, bias, index, weight, scale, col_sums, bad_row)
 *       -> sum_i s_i (lse_i - z_ik), float64; out = scale s_i (softmax_i - e_k).
 *       z = in + bias (bias (C,) or NULL). `out` may be `in` (in place). col_sums (C,)
 *       float64 or NULL: the gradient's column sums are added into it.
 *   ce_nll_<s>(in, rows, C, bias, index, weight, losses, bad_row)
 *       losses[i] = s_i (lse_i - z_ik) (0 where s_i <= 0); in is only read.
 *
 * Rows are taken in blocks of about CE_BLOCK entries (one row when C is larger), so that
 * short rows (C = 10) still run the exponentials as one long vector loop:
 *   1. per row: m = max_j z_j (a NaN does not survive the exp: it is caught in N below);
 *   2. e = exp(z - m) into the output (or scratch), one flat loop over the block;
 *   3. per row: N = sum_j e_j in float64 with 16 independent accumulators;
 *   4. per row: the loss, then the gradient row scaled in place (and its column sums).
 * Steps 1-4 touch a block while it sits in L1/L2.
 */
#define CE_BLOCK 2048
#define CE_SMALL 32 /* the most classes of a short row */

/* sum of n values in float64; 16 lanes, then a tree: no long dependency chain */
#define CE_DEFINE_SUM(S, real)                                                                \
    CE_INLINE double ce_sum_##S(const real *e, idx_t n) {                                     \
        double acc[16] = {0};                                                                 \
        idx_t j = 0;                                                                          \
        for (; j + 16 <= n; j += 16)                                                          \
            for (int l = 0; l < 16; ++l) acc[l] += (double)e[j + l];                          \
        for (int l = 0; j < n; ++j, ++l) acc[l] += (double)e[j];                              \
        for (int w = 8; w > 0; w /= 2)                                                        \
            for (int l = 0; l < w; ++l) acc[l] += acc[l + w];                                 \
        return acc[0];                                                                        \
    }

#define CE_DEFINE(S, real, EXP)                                                               \
    CE_DEFINE_SUM(S, real)                                                                    \
    CE_CLONES void ce_exp_##S(const real *x, real *out, idx_t n) {                            \
        for (idx_t j = 0; j < n; ++j) out[j] = EXP(x[j]);                                    \
    }                                                                                         \
                                                                                              \
    CE_INLINE real ce_rowmax_##S(const real *z, const real *bias, idx_t C) {                  \
        real m = -INFINITY;                                                                   \
        if (bias) {                                                                           \
            CE_SIMD_MAX for (idx_t j = 0; j < C; ++j) {                                       \
                real v = z[j] + bias[j];                                                      \
                m = v > m ? v : m;                                                            \
            }                                                                                 \
        } else {                                                                              \
            CE_SIMD_MAX for (idx_t j = 0; j < C; ++j) m = z[j] > m ? z[j] : m;               \
        }                                                                                     \
        return m;                                                                             \
    }                                                                                         \
                                                                                              \
    /* Steps 1-3 over rows [i0, i1): e (block-sized) gets the exponentials, m and norm     \
     * per row (relative to i0); returns the first undefined row or -1. Rows of weight     \
     * <= 0 get m = 0 and norm = 1 and their e is not used. */                               \
    CE_INLINE idx_t ce_block_##S(const real *in, real *e, idx_t i0, idx_t i1, idx_t C,        \
                                 const real *bias, const double *weight, real *m,             \
                                 double *norm) {                                              \
        idx_t nb = i1 - i0;                                                                   \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            m[r] = 0;                                                                         \
            if (!(weight[i0 + r] > 0.0)) continue;                                            \
            real mr = ce_rowmax_##S(in + (i0 + r) * C, bias, C);                              \
            if (!isfinite(mr)) return i0 + r;                                                 \
            m[r] = mr;                                                                        \
        }                                                                                     \
        if (nb == 1) { /* a long row: shift and exp in one loop */                            \
            const real *z = in + i0 * C;                                                      \
            real mr = m[0];                                                                   \
            if (bias) {                                                                       \
                for (idx_t j = 0; j < C; ++j) e[j] = EXP((z[j] + bias[j]) - mr);              \
            } else {                                                                          \
                for (idx_t j = 0; j < C; ++j) e[j] = EXP(z[j] - mr);                          \
            }                                                                                 \
        } else {                                                                              \
            for (idx_t r = 0; r < nb; ++r) {                                                  \
                const real *z = in + (i0 + r) * C;                                            \
                real *er = e + r * C, mr = m[r];                                              \
                if (bias) {                                                                   \
                    for (idx_t j = 0; j < C; ++j) er[j] = (z[j] + bias[j]) - mr;              \
                } else {                                                                      \
                    for (idx_t j = 0; j < C; ++j) er[j] = z[j] - mr;                          \
                }                                                                             \
            }                                                                                 \
            idx_t total = nb * C;                                                             \
            for (idx_t t = 0; t < total; ++t) e[t] = EXP(e[t]);                               \
        }                                                                                     \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            norm[r] = 1.0;                                                                    \
            if (!(weight[i0 + r] > 0.0)) continue;                                            \
            double nr = ce_sum_##S(e + r * C, C);                                             \
            if (!isfinite(nr)) return i0 + r; /* a NaN entry */                               \
            norm[r] = nr;                                                                     \
        }                                                                                     \
        return -1;                                                                            \
    }                                                                                         \
                                                                                              \
    /* Short rows (C <= CE_SMALL): the block is transposed into t (C, nb), so that the      \
     * max, exp and sums run across rows, one row per vector lane. Fills m, norm and t       \
     * with the exponentials; returns the first undefined row or -1. */                     \
    CE_INLINE idx_t ce_small_##S(const real *in, real *t, idx_t i0, idx_t nb, idx_t C,        \
                                 const real *bias, const double *weight, real *m,             \
                                 double *norm) {                                              \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            const real *z = in + (i0 + r) * C;                                                \
            for (idx_t j = 0; j < C; ++j) t[j * nb + r] = z[j] + (bias ? bias[j] : (real)0);  \
        }                                                                                     \
        for (idx_t r = 0; r < nb; ++r) m[r] = t[r];                                           \
        for (idx_t j = 1; j < C; ++j)                                                         \
            for (idx_t r = 0; r < nb; ++r) m[r] = t[j * nb + r] > m[r] ? t[j * nb + r] : m[r]; \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            if (!(weight[i0 + r] > 0.0))                                                      \
                m[r] = 0;                                                                     \
            else if (!isfinite(m[r])) /* all -inf or a +inf (a NaN: caught below) */         \
                return i0 + r;                                                                \
        }                                                                                     \
        for (idx_t j = 0; j < C; ++j)                                                         \
            for (idx_t r = 0; r < nb; ++r) t[j * nb + r] = EXP(t[j * nb + r] - m[r]);         \
        for (idx_t r = 0; r < nb; ++r) norm[r] = 0.0;                                         \
        for (idx_t j = 0; j < C; ++j)                                                         \
            for (idx_t r = 0; r < nb; ++r) norm[r] += (double)t[j * nb + r];                  \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            if (!(weight[i0 + r] > 0.0))                                                      \
                norm[r] = 1.0;                                                                \
            else if (!isfinite(norm[r]) || isnan(m[r])) /* a NaN entry */                     \
                return i0 + r;                                                                \
        }                                                                                     \
        return -1;                                                                            \
    }                                                                                         \
                                                                                              \
    CE_INLINE idx_t ce_block_rows_##S(idx_t C) {                                              \
        idx_t nb = CE_BLOCK / (C > 0 ? C : 1);                                                \
        return nb < 1 ? 1 : nb;                                                               \
    }                                                                                         \
                                                                                              \
    /* loss + gradient of a block of short rows, in the transposed layout, written back   \
     * row-major at the end (z_k already read: `out` may be `in`) */                         \
    CE_INLINE double ce_small_grad_##S(const real *in, real *out, idx_t i0, idx_t nb,         \
                                       idx_t C, const real *bias, const int64_t *index,       \
                                       const double *weight, double scale, double *col_sums,  \
                                       const real *z_k, real *m, double *norm, real *t,       \
                                       idx_t *bad_row) {                                      \
        double total = 0.0;                                                                   \
        real row_scale[CE_BLOCK];                                                             \
        idx_t bad = ce_small_##S(in, t, i0, nb, C, bias, weight, m, norm);                    \
        if (bad >= 0) {                                                                       \
            *bad_row = bad;                                                                   \
            return 0.0;                                                                       \
        }                                                                                     \
        double log_norm[CE_BLOCK];                                                            \
        ce_logs(norm, log_norm, nb);                                                          \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            double s = weight[i0 + r];                                                        \
            row_scale[r] = 0;                                                                 \
            if (!(s > 0.0)) continue;                                                         \
            total += s * (log_norm[r] - ((double)z_k[r] - (double)m[r]));                     \
            row_scale[r] = (real)(s * scale / norm[r]);                                       \
        }                                                                                     \
        for (idx_t j = 0; j < C; ++j) {                                                       \
            real *tj = t + j * nb;                                                            \
            for (idx_t r = 0; r < nb; ++r) tj[r] = row_scale[r] != 0 ? tj[r] * row_scale[r] : 0; \
        }                                                                                     \
        for (idx_t r = 0; r < nb; ++r) { /* - scale s_i at the true class */                  \
            double s = weight[i0 + r];                                                        \
            if (s > 0.0) t[index[i0 + r] * nb + r] -= (real)(s * scale);                      \
        }                                                                                     \
        if (col_sums) {                                                                       \
            for (idx_t j = 0; j < C; ++j) {                                                   \
                col_sums[j] += ce_sum_##S(t + j * nb, nb);                                    \
            }                                                                                 \
        }                                                                                     \
        for (idx_t r = 0; r < nb; ++r) {                                                      \
            real *g = out + (i0 + r) * C;                                                     \
            for (idx_t j = 0; j < C; ++j) g[j] = t[j * nb + r];                               \
        }                                                                                     \
        return total;                                                                         \
    }                                                                                         \
                                                                                              \
    CE_CLONES double ce_loss_grad_##S(const real *in, real *out, idx_t rows, idx_t C,         \
                                      const real *bias, const int64_t *index,                 \
                                      const double *weight, double scale, double *col_sums,   \
                                      idx_t *bad_row) {                                       \
        double total = 0.0;                                                                   \
        real m[CE_BLOCK];                                                                     \
        double norm[CE_BLOCK];                                                                \
        real t[CE_BLOCK];                                                                     \
        idx_t step = ce_block_rows_##S(C);                                                    \
        *bad_row = -1;                                                                        \
        for (idx_t i0 = 0; i0 < rows; i0 += step) {                                           \
            idx_t i1 = i0 + step < rows ? i0 + step : rows;                                   \
            idx_t nb = i1 - i0;                                                               \
            real z_k[CE_BLOCK]; /* read before the output (maybe `in`) is overwritten */      \
            for (idx_t r = 0; r < nb; ++r) {                                                  \
                idx_t k = index[i0 + r];                                                      \
                z_k[r] = in[(i0 + r) * C + k] + (bias ? bias[k] : (real)0);                   \
            }                                                                                 \
            if (C <= CE_SMALL) {                                                              \
                total += ce_small_grad_##S(in, out, i0, nb, C, bias, index, weight, scale,    \
                                           col_sums, z_k, m, norm, t, bad_row);               \
                if (*bad_row >= 0) return total;                                              \
                continue;                                                                     \
            }                                                                                 \
            idx_t bad = ce_block_##S(in, out + i0 * C, i0, i1, C, bias, weight, m, norm);     \
            if (bad >= 0) {                                                                   \
                *bad_row = bad;                                                               \
                return total;                                                                 \
            }                                                                                 \
            double log_norm[CE_BLOCK];                                                        \
            ce_logs(norm, log_norm, nb);                                                      \
            for (idx_t r = 0; r < nb; ++r) {                                                  \
                real *g = out + (i0 + r) * C;                                                 \
                double s = weight[i0 + r];                                                    \
                if (!(s > 0.0)) {                                                             \
                    for (idx_t j = 0; j < C; ++j) g[j] = 0;                                   \
                    continue;                                                                 \
                }                                                                             \
                idx_t k = index[i0 + r];                                                      \
                total += s * (log_norm[r] - ((double)z_k[r] - (double)m[r]));                 \
                real row_scale = (real)(s * scale / norm[r]);                                 \
                real delta = (real)(s * scale);                                               \
                if (col_sums) {                                                               \
                    for (idx_t j = 0; j < C; ++j) {                                           \
                        real v = g[j] * row_scale;                                            \
                        g[j] = v;                                                             \
                        col_sums[j] += (double)v;                                             \
                    }                                                                         \
                    g[k] -= delta;                                                            \
                    col_sums[k] -= (double)delta;                                             \
                } else {                                                                      \
                    for (idx_t j = 0; j < C; ++j) g[j] *= row_scale;                          \
                    g[k] -= delta;                                                            \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        return total;                                                                         \
    }                                                                                         \
                                                                                              \
    CE_CLONES void ce_nll_##S(const real *in, idx_t rows, idx_t C, const real *bias,          \
                              const int64_t *index, const double *weight, double *losses,     \
                              idx_t *bad_row) {                                               \
        real m[CE_BLOCK];                                                                     \
        double norm[CE_BLOCK];                                                                \
        idx_t step = ce_block_rows_##S(C);                                                    \
        idx_t size = step * C;                                                                \
        real *e = (real *)malloc((size_t)(size > 0 ? size : 1) * sizeof(real));               \
        *bad_row = -1;                                                                        \
        if (!e) {                                                                             \
            *bad_row = -2; /* out of memory */                                                \
            return;                                                                           \
        }                                                                                     \
        for (idx_t i0 = 0; i0 < rows; i0 += step) {                                           \
            idx_t i1 = i0 + step < rows ? i0 + step : rows;                                   \
            idx_t bad = C <= CE_SMALL                                                         \
                            ? ce_small_##S(in, e, i0, i1 - i0, C, bias, weight, m, norm)      \
                            : ce_block_##S(in, e, i0, i1, C, bias, weight, m, norm);          \
            if (bad >= 0) {                                                                   \
                *bad_row = bad;                                                               \
                break;                                                                        \
            }                                                                                 \
            double log_norm[CE_BLOCK];                                                        \
            ce_logs(norm, log_norm, i1 - i0);                                                 \
            for (idx_t r = 0; r < i1 - i0; ++r) {                                             \
                idx_t i = i0 + r, k = index[i];                                               \
                double s = weight[i];                                                         \
                real z_k = in[i * C + k] + (bias ? bias[k] : (real)0);                        \
                losses[i] = s > 0.0 ? s * (log_norm[r] - ((double)z_k - (double)m[r])) : 0.0; \
            }                                                                                 \
        }                                                                                     \
        free(e);                                                                              \
    }

CE_DEFINE(f32, float, ce_expf)
CE_DEFINE(f64, double, ce_exp)

/* ---------------------------------------------------------------- along a line
 * ce_line_<s>(base, base_stride, step, rows, C, t, index, weight, out, bad_row): for the
 * scores z = base + t step of rows [0, rows) (step (rows, C) C-contiguous, holding the
 * direction's scores; base the scores at t = 0, row i at base + i * base_stride: a
 * (rows, C) array, or with base_stride 0 one row shared by all), with p = softmax(z) and
 * d = step row:
 *
 *     out[0] = sum_i s_i (lse_i - z_ik)                     the loss at t
 *     out[1] = sum_i s_i (p_i . d_i - d_ik)                 its derivative in t
 *     out[2] = sum_i s_i (p_i . d_i^2 - (p_i . d_i)^2)      its second derivative
 *
 * all accumulated in float64 (z itself in the data's dtype). Reads both arrays once,
 * writes nothing but out; rows of weight <= 0 are skipped. Returns through *bad_row the
 * first row of positive weight whose log-sum-exp is not finite (else -1; -2 when the
 * scratch row could not be allocated). */
#define CE_DEFINE_LINE(S, real, EXP)                                                          \
    CE_CLONES void ce_line_##S(const real *base, idx_t base_stride, const real *step,         \
                               idx_t rows, idx_t C, double t, const int64_t *index,           \
                               const double *weight, double *out, idx_t *bad_row) {           \
        double loss = 0.0, d1 = 0.0, d2 = 0.0;                                                \
        real tr = (real)t;                                                                    \
        real *e = (real *)malloc((size_t)(C > 0 ? C : 1) * sizeof(real));                     \
        *bad_row = -1;                                                                        \
        out[0] = out[1] = out[2] = 0.0;                                                       \
        if (!e) {                                                                             \
            *bad_row = -2;                                                                    \
            return;                                                                           \
        }                                                                                     \
        for (idx_t i = 0; i < rows; ++i) {                                                    \
            double s = weight[i];                                                             \
            if (!(s > 0.0)) continue;                                                         \
            const real *a = base + i * base_stride, *b = step + i * C;                        \
            real m = -INFINITY;                                                               \
            CE_SIMD_MAX for (idx_t j = 0; j < C; ++j) {                                       \
                real v = a[j] + tr * b[j];                                                    \
                e[j] = v;                                                                     \
                m = v > m ? v : m;                                                            \
            }                                                                                 \
            if (!isfinite(m)) {                                                               \
                *bad_row = i;                                                                 \
                break;                                                                        \
            }                                                                                 \
            idx_t k = index[i];                                                               \
            double z_k = (double)e[k];                                                        \
            for (idx_t j = 0; j < C; ++j) e[j] = EXP(e[j] - m);                               \
            double norm = 0.0, first = 0.0, second = 0.0;                                     \
            CE_PRAGMA(omp simd reduction(+ : norm, first, second))                            \
            for (idx_t j = 0; j < C; ++j) {                                                   \
                double ej = (double)e[j], dj = (double)b[j];                                  \
                norm += ej;                                                                   \
                first += ej * dj;                                                             \
                second += ej * dj * dj;                                                       \
            }                                                                                 \
            if (!isfinite(norm)) { /* a NaN entry */                                          \
                *bad_row = i;                                                                 \
                break;                                                                        \
            }                                                                                 \
            double mean = first / norm;                                                       \
            loss += s * (ce_log(norm) - (z_k - (double)m));                                   \
            d1 += s * (mean - (double)b[k]);                                                  \
            d2 += s * (second / norm - mean * mean);                                          \
        }                                                                                     \
        free(e);                                                                              \
        out[0] = loss;                                                                        \
        out[1] = d1;                                                                          \
        out[2] = d2;                                                                          \
    }

CE_DEFINE_LINE(f32, float, ce_expf)
CE_DEFINE_LINE(f64, double, ce_exp)

/* The kernels' interface version: _kernel.py refuses a stale build of another version. */
int ce_abi_version(void) { return 4; }

/* A module without methods: setuptools builds this file as an extension, and ctypes loads
 * the same shared object. */
static struct PyModuleDef ce_module = {
    PyModuleDef_HEAD_INIT, "_ckernel", NULL, -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__ckernel(void) { return PyModule_Create(&ce_module); }
