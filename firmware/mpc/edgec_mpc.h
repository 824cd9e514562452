/*
 * edgec_mpc.h -- Newton-type model-predictive control runtime for edgec forward models.
 *
 * C99, no dynamic allocation, no recursion. Every size is a compile-time constant taken from the
 * generated "edgec_mpc_config.h" (written by `edgec mpc build`), which also declares the compiled
 * forward model (and its generated Jacobian) and holds the limits and solver settings.
 *
 * Two modes:
 *
 *  - One-step (NARX / static) mode, EDGEC_MPC_HORIZON_MODE == 0. The model predicts the next
 *    output y(t+1) = f(z) from the model input
 *        z = [ u(t) | u(t-1) ... u(t-LU) | y(t) ... y(t-LY+1) | s(t) ]
 *    (current command, LU past commands, LY measured outputs, NS sensor signals). Each tick
 *    solves f(z(u)) = y_ref for u: damped Newton-Raphson (backtracking on |r|^2) when
 *    dim(u) == dim(y) and no move weights are set, Levenberg-Marquardt otherwise, only with
 *    respect to the current command u(t). Delay lines are ring buffers inside the controller.
 *    y_ref holds NY values, the measurement NY + NS values: [ y(t) | s(t) ].
 *
 *  - Horizon mode, EDGEC_MPC_HORIZON_MODE == 1. The model is a one-step dynamics model
 *    x' = g([x | u]) (NX states, NU commands). Each tick minimises, over u_0 .. u_{H-1},
 *        sum_k sum_i q_i (x_k[out_i] - r_k,i)^2 + sum_k sum_j w_j (u_k,j - u_{k-1},j)^2
 *    with Gauss-Newton/Levenberg-Marquardt; the Jacobians dx'/dx and dx'/du of each step are
 *    chained through the horizon. y_ref holds H * NY values (row k: the reference for x_{k+1}),
 *    the measurement the NX state values x(t).
 *
 * In both modes the commands respect the box [u_min, u_max] and |u(t) - u(t-1)| <= du_max by
 * projection, the solve warm-starts from the last solution, and the iteration budget is fixed.
 * Safety: the command written to *u_out is always inside both limits. Non-finite references or
 * measurements, a non-finite model output, or (one-step mode) no convergence within the budget
 * hold the last command and set EDGEC_MPC_FLAG_FALLBACK. The NaN/inf tests read the IEEE-754 bit
 * patterns, so they hold when this file is built with -ffast-math too.
 *
 * Firmware use: call edgec_mpc_init() once, then edgec_mpc_step() once per control tick.
 */
#ifndef EDGEC_MPC_H
#define EDGEC_MPC_H

#include <stddef.h>

/* EDGEC_MPC_FN: the qualifier of every runtime function, empty in C. A CUDA translation unit
 * that runs controllers on the GPU defines it before including this file: __device__ in edgec's
 * batched simulator (templates/cuda/batch_sim.cu.j2), whose forward model is the CUDA back-end's
 * device code (nvcc refuses a __host__ __device__ function that calls device-only code or reads
 * __constant__ tables). The configuration's constant tables take EDGEC_MPC_DATA likewise. */
#ifndef EDGEC_MPC_FN
#define EDGEC_MPC_FN
#endif

#include "edgec_mpc_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* array sizes that may be zero in the configuration */
#define EDGEC_MPC_DIM(n) (((n) > 0) ? (n) : 1)

#if EDGEC_MPC_HORIZON_MODE
#define EDGEC_MPC_REF_SIZE (EDGEC_MPC_HORIZON * EDGEC_MPC_NY)
#define EDGEC_MPC_MEAS_SIZE EDGEC_MPC_NX
#else
#define EDGEC_MPC_REF_SIZE EDGEC_MPC_NY
#define EDGEC_MPC_MEAS_SIZE (EDGEC_MPC_NY + EDGEC_MPC_NS)
#endif
/* decision variables of one solve */
#define EDGEC_MPC_NDEC (EDGEC_MPC_HORIZON * EDGEC_MPC_NU)

/* per-tick flags (bit mask) */
#define EDGEC_MPC_FLAG_CONVERGED 0x001u       /* residual within tolerance */
#define EDGEC_MPC_FLAG_STATIONARY 0x002u      /* no further descent: step below step tolerance
                                                 or no decrease found (e.g. optimum on a limit) */
#define EDGEC_MPC_FLAG_FALLBACK 0x004u        /* the last command was held */
#define EDGEC_MPC_FLAG_NONFINITE_INPUT 0x008u /* NaN/inf in the reference or measurement */
#define EDGEC_MPC_FLAG_NONFINITE_MODEL 0x010u /* NaN/inf from the model or its Jacobian */
#define EDGEC_MPC_FLAG_NO_CONVERGE 0x020u     /* iteration budget exhausted */
#define EDGEC_MPC_FLAG_U_LIMIT 0x040u         /* a command sits on u_min or u_max */
#define EDGEC_MPC_FLAG_RATE_LIMIT 0x080u      /* a command sits on its rate limit */
#define EDGEC_MPC_FLAG_SINGULAR 0x100u        /* singular Newton system: LM step taken instead */

typedef struct {
    unsigned iterations;  /* solver iterations this tick */
    unsigned evaluations; /* model evaluations (exact Jacobian: 1 each; FD: 1 + 2 * NJ each) */
    float residual;       /* max |predicted output - reference| at the applied solution */
    float cost;           /* objective at the applied solution */
    unsigned flags;       /* EDGEC_MPC_FLAG_* */
} edgec_mpc_report_t;

#if EDGEC_MPC_HORIZON_MODE
/* horizon mode: one candidate plan and its Gauss-Newton system */
typedef struct {
    float u[EDGEC_MPC_NDEC];
    float a[EDGEC_MPC_NDEC * EDGEC_MPC_NDEC]; /* Gauss-Newton matrix */
    float g[EDGEC_MPC_NDEC];                  /* gradient */
    float cost;
    float rmax;
} edgec_mpc_plan_t;

/* horizon mode: scratch of one rollout and one damped solve */
typedef struct {
    float z[EDGEC_MPC_NZ];
    float xn[EDGEC_MPC_NX];
    float jac[EDGEC_MPC_NX * EDGEC_MPC_NJ];
    float sens[EDGEC_MPC_NX * EDGEC_MPC_NDEC]; /* d x_k / d U */
    float sens2[EDGEC_MPC_NX * EDGEC_MPC_NDEC];
    float m[EDGEC_MPC_NDEC * EDGEC_MPC_NDEC];
    float d[EDGEC_MPC_NDEC];
} edgec_mpc_work_t;
#endif

/* Everything one controller touches: its state, the forward model's arena and (horizon mode)
 * the solver's scratch. The runtime has no file-scope variables, so controllers in separate
 * edgec_mpc_t objects may run at once (other tasks, ISRs); one edgec_mpc_t must not be used by
 * two calls at once. sizeof(edgec_mpc_t) is all the RAM a controller needs besides its stack. */
typedef struct {
    float u_last[EDGEC_MPC_NU];           /* the command applied at the last tick */
    float u_plan[EDGEC_MPC_NDEC];         /* the last solution (warm start) */
    float u_hist[EDGEC_MPC_DIM(EDGEC_MPC_LU * EDGEC_MPC_NU)]; /* ring: past commands */
    float y_hist[EDGEC_MPC_DIM(EDGEC_MPC_LY * EDGEC_MPC_NY)]; /* ring: measured outputs */
    float sensors[EDGEC_MPC_DIM(EDGEC_MPC_NS)];               /* last finite sensor values */
    unsigned u_head;                      /* ring index of the newest past command */
    unsigned y_head;                      /* ring index of the newest measured output */
    unsigned long ticks;
    edgec_mpc_report_t report;
    float model_arena[EDGEC_MPC_DIM((EDGEC_MPC_MODEL_ARENA_BYTES + 3) / 4)]; /* forward model */
#if !EDGEC_MPC_HORIZON_MODE
    /* the model at the last tick's final iterate: when the next tick's first model input is the
     * same bit for bit (a static model, or unchanged delay lines), it is reused, not recomputed */
    float last_z[EDGEC_MPC_NZ];
    float last_y[EDGEC_MPC_NY];
    float last_jac[EDGEC_MPC_NY * EDGEC_MPC_NU];
    unsigned last_valid; /* 1 when last_* hold a finite evaluation */
#endif
#if EDGEC_MPC_HORIZON_MODE
    edgec_mpc_plan_t plans[2]; /* the current plan and the trial */
    edgec_mpc_work_t work;
#endif
} edgec_mpc_t;

/* Resets the controller: u = u_init, past commands = u_init, past outputs = 0. */
EDGEC_MPC_FN void edgec_mpc_init(edgec_mpc_t *c);

/* Fills the output delay line with one measurement [ y | s ] (one-step mode; optional). */
EDGEC_MPC_FN void edgec_mpc_prime(edgec_mpc_t *c, const float *measurement);

/* One control tick. y_ref: EDGEC_MPC_REF_SIZE values; measurement: EDGEC_MPC_MEAS_SIZE values;
 * u_out: EDGEC_MPC_NU values, always within the limits. Returns the tick's flags. */
EDGEC_MPC_FN unsigned edgec_mpc_step(edgec_mpc_t *c, const float *y_ref,
                                     const float *measurement, float *u_out);

/* The report of the last tick. */
EDGEC_MPC_FN const edgec_mpc_report_t *edgec_mpc_last_report(const edgec_mpc_t *c);

/* The model input z for command u with the current delay lines (one-step mode). Between
 * ticks the lines hold the last tick's measurement as the newest output and its command as the
 * newest past command. z: EDGEC_MPC_NZ values. */
EDGEC_MPC_FN void edgec_mpc_model_input(const edgec_mpc_t *c, const float *u, float *z);

/* sizeof(edgec_mpc_t), for foreign-function callers. */
EDGEC_MPC_FN size_t edgec_mpc_sizeof(void);


#ifdef __cplusplus
}
#endif

#endif /* EDGEC_MPC_H */
