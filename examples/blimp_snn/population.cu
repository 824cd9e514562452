/* The blimp example's fitness evaluation for a whole evolution population, one candidate per
 * GPU thread (examples/blimp_snn/population.py builds and loads it).
 *
 * Each candidate is one spiking controller of blimp_snn.py (40 encoding LIF neurons, 40
 * current-based hidden LIF neurons with subtractive reset, optional adaptive thresholds) run
 * open loop over the training inputs. Its hidden spikes, passed through the output's leaky
 * integrator, are the features of the least-squares readout: instead of writing the features
 * out (population x steps x 40 floats), each thread accumulates the readout's normal equations
 * X^T X, X^T y and y^T y in double, and the host solves them.
 *
 * The float32 arithmetic is blimp_snn.features' expression by expression (no fused
 * multiply-adds: nvcc -fmad=false, host -ffp-contract=off), so the spike trains equal numpy's
 * bit for bit; the hidden weights lie on a 2^-8 grid, so the spike-driven sums are exact in any
 * order.
 *
 * Compiled as host C++ (EDGEC_HOST_BUILD), the same per-candidate code runs on the CPU
 * (blimp_pop_eval_host over a range of candidates; Python runs ranges on threads).
 */
#ifdef EDGEC_HOST_BUILD
#define POP_FN static
#else
#include <cuda_runtime.h>
#define POP_FN __device__ static
#endif

#include <stddef.h>

#define N_ENC 40
#define N_HID 40
#define N_X (N_HID + 1) /* features + the filtered constant */
#define N_TRI ((N_X * (N_X + 1)) / 2)

#define BETA_ENC 0.8f
#define BETA_HID 0.9f
#define ALPHA_HID 0.5f
#define ADAPT_DECAY 0.97f
#define ADAPT_ADD 0.5f

typedef struct {
    int steps;      /* T */
    int adaptive;   /* adaptive hidden thresholds */
    float lam;      /* the output's leaky integrator */
} pop_config_t;

/* One candidate p: routed [T][N_ENC] inputs, target/one [T]; parameters w_enc, b_enc [N_ENC],
 * w_hid [N_ENC][N_HID], b_hid [N_HID]; writes xtx [N_X][N_X], xty [N_X], *yty and, when feats
 * is not NULL, the features [T][N_HID]. */
POP_FN void pop_eval_one(const pop_config_t cfg, const float *routed, const double *target,
                         const double *one, const float *w_enc, const float *b_enc,
                         const float *w_hid, const float *b_hid, double *xtx, double *xty,
                         double *yty, float *feats)
{
    float m1[N_ENC];
    float syn[N_HID];
    float m2[N_HID];
    float tr[N_HID];
    float f[N_HID];
    unsigned char s1[N_ENC];
    double tri[N_TRI];
    double xy[N_X];
    double x[N_X];
    double yy = 0.0;
    const float lam = cfg.lam;
    const float one_minus_lam = 1.0f - lam;
    for (int e = 0; e < N_ENC; ++e) {
        m1[e] = 0.0f;
    }
    for (int h = 0; h < N_HID; ++h) {
        syn[h] = 0.0f;
        m2[h] = 0.0f;
        tr[h] = 0.0f;
        f[h] = 0.0f;
    }
    for (int i = 0; i < N_TRI; ++i) {
        tri[i] = 0.0;
    }
    for (int i = 0; i < N_X; ++i) {
        xy[i] = 0.0;
    }
    for (int t = 0; t < cfg.steps; ++t) {
        const float *xe = &routed[(size_t)t * N_ENC];
        for (int e = 0; e < N_ENC; ++e) {
            const float cur = (xe[e] * w_enc[e]) + b_enc[e];
            float m = (BETA_ENC * m1[e]) + cur;
            s1[e] = (unsigned char)(m > 1.0f);
            if (s1[e] != 0u) {
                m = m - 1.0f;
            }
            m1[e] = m;
        }
        for (int h = 0; h < N_HID; ++h) {
            float sum = 0.0f;
            for (int e = 0; e < N_ENC; ++e) {
                if (s1[e] != 0u) {
                    sum = sum + w_hid[(e * N_HID) + h];
                }
            }
            syn[h] = ((ALPHA_HID * syn[h]) + sum) + b_hid[h];
            float m = (BETA_HID * m2[h]) + syn[h];
            const float theta = (cfg.adaptive != 0) ? (1.0f + (ADAPT_ADD * tr[h])) : 1.0f;
            const float s2 = (m > theta) ? 1.0f : 0.0f;
            m = m - (s2 * theta);
            m2[h] = m;
            if (cfg.adaptive != 0) {
                tr[h] = (ADAPT_DECAY * tr[h]) + s2;
            }
            f[h] = (lam * f[h]) + (one_minus_lam * s2);
            x[h] = (double)f[h];
        }
        if (feats != NULL) {
            for (int h = 0; h < N_HID; ++h) {
                feats[((size_t)t * N_HID) + h] = f[h];
            }
        }
        x[N_HID] = one[t];
        const double y = target[t];
        int k = 0;
        for (int i = 0; i < N_X; ++i) {
            xy[i] += x[i] * y;
            for (int j = i; j < N_X; ++j) {
                tri[k] += x[i] * x[j];
                ++k;
            }
        }
        yy += y * y;
    }
    int k = 0;
    for (int i = 0; i < N_X; ++i) {
        xty[i] = xy[i];
        for (int j = i; j < N_X; ++j) {
            xtx[(i * N_X) + j] = tri[k];
            xtx[(j * N_X) + i] = tri[k];
            ++k;
        }
    }
    *yty = yy;
}

/* candidate p's slices of the population arrays */
#define POP_ARGS(p)                                                                            \
    cfg, routed, target, one, &w_enc[(size_t)(p) * N_ENC], &b_enc[(size_t)(p) * N_ENC],       \
        &w_hid[(size_t)(p) * N_ENC * N_HID], &b_hid[(size_t)(p) * N_HID],                     \
        &xtx[(size_t)(p) * N_X * N_X], &xty[(size_t)(p) * N_X], &yty[p],                       \
        (feats != NULL) ? &feats[(size_t)(p) * (size_t)cfg.steps * N_HID] : NULL

/* the sizes this file is built for (the Python side checks them) */
extern "C" int blimp_pop_sizes(int *n_enc, int *n_hid)
{
    *n_enc = N_ENC;
    *n_hid = N_HID;
    return 0;
}

#ifdef EDGEC_HOST_BUILD

/* candidates first .. first + count - 1 on this thread */
extern "C" int blimp_pop_eval_host(pop_config_t cfg, int first, int count, const float *routed,
                                   const double *target, const double *one,
                                   const float *w_enc, const float *b_enc, const float *w_hid,
                                   const float *b_hid, double *xtx, double *xty, double *yty,
                                   float *feats)
{
    for (int p = first; p < first + count; ++p) {
        pop_eval_one(POP_ARGS(p));
    }
    return 0;
}

#else

__global__ static void pop_kernel(pop_config_t cfg, int n, const float *routed,
                                  const double *target, const double *one, const float *w_enc,
                                  const float *b_enc, const float *w_hid, const float *b_hid,
                                  double *xtx, double *xty, double *yty, float *feats)
{
    const int p = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (p < n) {
        pop_eval_one(POP_ARGS(p));
    }
}

extern "C" const char *blimp_pop_error(int code)
{
    return cudaGetErrorString((cudaError_t)code);
}

/* The whole population on the GPU: host arrays in and out (uploaded, one kernel, downloaded). */
extern "C" int blimp_pop_eval_device(pop_config_t cfg, int n, const float *routed,
                                     const double *target, const double *one,
                                     const float *w_enc, const float *b_enc, const float *w_hid,
                                     const float *b_hid, double *xtx, double *xty, double *yty,
                                     float *feats)
{
    const size_t steps = (size_t)cfg.steps;
    const size_t sizes[] = {
        steps * N_ENC * sizeof(float), steps * sizeof(double), steps * sizeof(double),
        (size_t)n * N_ENC * sizeof(float), (size_t)n * N_ENC * sizeof(float),
        (size_t)n * N_ENC * N_HID * sizeof(float), (size_t)n * N_HID * sizeof(float),
        (size_t)n * N_X * N_X * sizeof(double), (size_t)n * N_X * sizeof(double),
        (size_t)n * sizeof(double),
        (feats != NULL) ? (size_t)n * steps * N_HID * sizeof(float) : (size_t)0,
    };
    const void *host_in[] = {routed, target, one, w_enc, b_enc, w_hid, b_hid};
    void *host_out[] = {xtx, xty, yty, feats};
    enum { N_BUF = 11, N_IN = 7 };
    void *dev[N_BUF] = {NULL};
    cudaError_t err = cudaSuccess;
    for (int i = 0; (i < N_BUF) && (err == cudaSuccess); ++i) {
        if (sizes[i] > 0u) {
            err = cudaMalloc(&dev[i], sizes[i]);
        }
    }
    for (int i = 0; (i < N_IN) && (err == cudaSuccess); ++i) {
        err = cudaMemcpy(dev[i], host_in[i], sizes[i], cudaMemcpyHostToDevice);
    }
    if (err == cudaSuccess) {
        const int block = 128;
        pop_kernel<<<(n + block - 1) / block, block>>>(
            cfg, n, (const float *)dev[0], (const double *)dev[1], (const double *)dev[2],
            (const float *)dev[3], (const float *)dev[4], (const float *)dev[5],
            (const float *)dev[6], (double *)dev[7], (double *)dev[8], (double *)dev[9],
            (float *)dev[10]);
        err = cudaGetLastError();
    }
    if (err == cudaSuccess) {
        err = cudaDeviceSynchronize();
    }
    for (int i = 0; (i < 4) && (err == cudaSuccess); ++i) {
        if (sizes[N_IN + i] > 0u) {
            err = cudaMemcpy(host_out[i], dev[N_IN + i], sizes[N_IN + i], cudaMemcpyDeviceToHost);
        }
    }
    for (int i = 0; i < N_BUF; ++i) {
        if (dev[i] != NULL) {
            (void)cudaFree(dev[i]);
        }
    }
    return (int)err;
}

#endif
