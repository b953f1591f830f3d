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
#define CE_SIMD_MAX CE_PRAGMA(omp simd reduction(max : m) reduction(| : nan))
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
 */
#define CE_DEFINE(S, real, EXP)                                                               \
    CE_CLONES void ce_exp_##S(const real *x, real *out, idx_t n) {                            \
        for (idx_t j = 0; j < n; ++j) out[j] = EXP(x[j]);                                    \
    }                                                                                         \
                                                                                              \
    /* max of a row, and whether it holds a NaN */                                           \
    CE_INLINE real ce_rowmax_##S(const real *z, const real *bias, idx_t C, int *has_nan) {    \
        real m = -INFINITY;                                                                   \
        int nan = 0;                                                                          \
        if (bias) {                                                                           \
            CE_SIMD_MAX for (idx_t j = 0; j < C; ++j) {                                       \
                real v = z[j] + bias[j];                                                      \
                m = v > m ? v : m;                                                            \
                nan |= v != v;                                                                \
            }                                                                                 \
        } else {                                                                              \
            CE_SIMD_MAX for (idx_t j = 0; j < C; ++j) {                                       \
                real v = z[j];                                                                \
                m = v > m ? v : m;                                                            \
                nan |= v != v;                                                                \
            }                                                                                 \
        }                                                                                     \
        *has_nan = nan;                                                                       \
        return m;                                                                             \
    }                                                                                         \
                                                                                              \
    CE_CLONES double ce_loss_grad_##S(const real *in, real *out, idx_t rows, idx_t C,         \
                                      const real *bias, const int64_t *index,                 \
                                      const double *weight, double scale, double *col_sums,   \
                                      idx_t *bad_row) {                                       \
        double total = 0.0;                                                                   \
        *bad_row = -1;                                                                        \
        for (idx_t i = 0; i < rows; ++i) {                                                    \
            const real *z = in + i * C;                                                       \
            real *g = out + i * C;                                                            \
            double s = weight[i];                                                             \
            if (!(s > 0.0)) {                                                                 \
                for (idx_t j = 0; j < C; ++j) g[j] = 0;                                       \
                continue;                                                                     \
            }                                                                                 \
            int nan;                                                                          \
            real m = ce_rowmax_##S(z, bias, C, &nan);                                         \
            if (nan || !isfinite(m)) {                                                        \
                *bad_row = i;                                                                 \
                return total;                                                                 \
            }                                                                                 \
            idx_t k = index[i];                                                               \
            real z_k = z[k] + (bias ? bias[k] : (real)0); /* read before overwritten */       \
            double norm = 0.0;                                                                \
            if (bias) {                                                                       \
                CE_SIMD_SUM for (idx_t j = 0; j < C; ++j) {                                   \
                    real e = EXP((z[j] + bias[j]) - m);                                       \
                    g[j] = e;                                                                 \
                    norm += (double)e;                                                        \
                }                                                                             \
            } else {                                                                          \
                CE_SIMD_SUM for (idx_t j = 0; j < C; ++j) {                                   \
                    real e = EXP(z[j] - m);                                                   \
                    g[j] = e;                                                                 \
                    norm += (double)e;                                                        \
                }                                                                             \
            }                                                                                 \
            total += s * (log(norm) - ((double)z_k - (double)m));                             \
            real row_scale = (real)(s * scale / norm);                                        \
            real delta = (real)(s * scale);                                                   \
            if (col_sums) {                                                                   \
                for (idx_t j = 0; j < C; ++j) {                                               \
                    real v = g[j] * row_scale;                                                \
                    g[j] = v;                                                                 \
                    col_sums[j] += (double)v;                                                 \
                }                                                                             \
                g[k] -= delta;                                                                \
                col_sums[k] -= (double)delta;                                                 \
            } else {                                                                          \
                for (idx_t j = 0; j < C; ++j) g[j] *= row_scale;                              \
                g[k] -= delta;                                                                \
            }                                                                                 \
        }                                                                                     \
        return total;                                                                         \
    }                                                                                         \
                                                                                              \
    CE_CLONES void ce_nll_##S(const real *in, idx_t rows, idx_t C, const real *bias,          \
                              const int64_t *index, const double *weight, double *losses,     \
                              idx_t *bad_row) {                                               \
        *bad_row = -1;                                                                        \
        for (idx_t i = 0; i < rows; ++i) {                                                    \
            const real *z = in + i * C;                                                       \
            double s = weight[i];                                                             \
            losses[i] = 0.0;                                                                  \
            if (!(s > 0.0)) continue;                                                         \
            int nan;                                                                          \
            real m = ce_rowmax_##S(z, bias, C, &nan);                                         \
            if (nan || !isfinite(m)) {                                                        \
                *bad_row = i;                                                                 \
                return;                                                                       \
            }                                                                                 \
            idx_t k = index[i];                                                               \
            real z_k = z[k] + (bias ? bias[k] : (real)0);                                     \
            double norm = 0.0;                                                                \
            if (bias) {                                                                       \
                CE_SIMD_SUM for (idx_t j = 0; j < C; ++j) norm +=                             \
                    (double)EXP((z[j] + bias[j]) - m);                                        \
            } else {                                                                          \
                CE_SIMD_SUM for (idx_t j = 0; j < C; ++j) norm += (double)EXP(z[j] - m);      \
            }                                                                                 \
            losses[i] = s * (log(norm) - ((double)z_k - (double)m));                          \
        }                                                                                     \
    }

CE_DEFINE(f32, float, ce_expf)
CE_DEFINE(f64, double, ce_exp)

/* The kernels' interface version: _kernel.py refuses a stale build of another version. */
int ce_abi_version(void) { return 1; }

/* A module without methods: setuptools builds this file as an extension, and ctypes loads
 * the same shared object. */
static struct PyModuleDef ce_module = {PyModuleDef_HEAD_INIT, "_ckernel", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__ckernel(void) { return PyModule_Create(&ce_module); }
