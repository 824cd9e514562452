/*
 * edgec_loop.h -- one closed loop (the generated MPC controller + a plant of edgec_plants.h),
 * the unit of edgec's batched simulator (`edgec simulate --batch N`).
 *
 * A batch is N independent loops that share one read-only edgec_loop_spec_t: loop i runs the
 * plant with its own parameters params[i], an actuator delay of delay[i] ticks, the reference
 * ref_index[i] of the set and measurement noise from its own seed[i]. What a loop produces
 * (its metrics, optionally its trajectory) goes to slots of loop i only, so the batch gives the
 * same bits however the loops are spread over threads (or GPU threads).
 *
 * Per tick k (time k dt), as edgec/mpc/simulate.py's run_mpc(): the controller is given the
 * reference of tick k + 1 (horizon mode: of ticks k + 1 .. k + H, the last row repeated past the
 * end) and the measurement (NARX mode: [ y | 0 (sensors) ]; horizon mode: the state x), each
 * measured value plus noise * N(0, 1); its command reaches the plant delay ticks later (before
 * the first one arrives the plant holds its rest input, zero); the plant integrates one tick;
 * the loop is scored on y((k + 1) dt) - ref((k + 1) dt).
 *
 * C99, no globals, no allocation, no recursion: edgec_loop_run() may be compiled as device code
 * (EDGEC_LOOP_FN = __device__ in edgec's GPU simulator, templates/cuda/batch_sim.cu.j2, as the
 * controller it calls is device code there), with the controller state edgec_mpc_t supplied by
 * the caller (a thread's stack or scratch on the host; local memory on a GPU).
 */
#ifndef EDGEC_LOOP_H
#define EDGEC_LOOP_H

#include "edgec_mpc.h"
#include "edgec_plants.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the longest actuator delay a loop may have, in control ticks */
#define EDGEC_LOOP_MAX_DELAY 32

/* values per tick of a recorded trajectory: y, the command applied by the plant (NU), the
 * controller's command (NU), the tick's flags, its solver iterations */
#define EDGEC_LOOP_TRACE_WIDTH (3 + (2 * EDGEC_MPC_NU))

typedef struct {
    int plant;                  /* EDGEC_PLANT_* */
    int substeps;               /* RK4 steps per tick */
    double dt;                  /* control tick (s) */
    const double *u_min;        /* the plant's actuator range (EDGEC_MPC_NU values each) */
    const double *u_max;
    const double *params;       /* n_loops x EDGEC_PLANT_MAX_PARAMS plant parameters */
    const int *delay;           /* n_loops actuator delays (ticks, 0 .. EDGEC_LOOP_MAX_DELAY) */
    const int *ref_index;       /* n_loops: which reference of the set */
    const unsigned long long *seed; /* n_loops noise seeds */
    const double *noise;        /* n_loops: standard deviation of the measurement noise */
    const double *refs;         /* every reference's rows (EDGEC_MPC_NY values each), stacked */
    const int *ref_first;       /* per reference: its first row in refs */
    const int *ref_rows;        /* per reference: its rows (ticks + 1, at least 2) */
} edgec_loop_spec_t;

/* What one loop scored (all doubles, so that a foreign caller can view an array of them as a
 * table of float64 columns). */
typedef struct {
    double rmse;              /* root-mean-square tracking error; inf if the output diverged */
    double max_error;         /* largest |y - ref|; inf if the output diverged */
    double ticks;             /* control ticks run */
    double fallbacks;         /* ticks with EDGEC_MPC_FLAG_FALLBACK */
    double u_limit;           /* ticks with a command on u_min/u_max (EDGEC_MPC_FLAG_U_LIMIT) */
    double rate_limit;        /* ticks with a command on its rate limit */
    double no_converge;       /* ticks that ran out of iterations */
    double mean_iterations;   /* solver iterations per tick */
    double mean_evaluations;  /* model evaluations per tick */
} edgec_loop_result_t;

/* Runs loop i of the batch with the controller state *ctrl (any contents: it is reset first).
 * trace: NULL, or ref_rows[ref_index[i]] - 1 rows of EDGEC_LOOP_TRACE_WIDTH values. */
EDGEC_LOOP_FN void edgec_loop_run(const edgec_loop_spec_t *spec, int i, edgec_mpc_t *ctrl,
                                  edgec_loop_result_t *result, double *trace);

/* Layout facts for a foreign caller's mirror of these structs (8 values, see edgec_loop.c). */
void edgec_batch_layout(long *out);

#ifdef __cplusplus
}
#endif

#endif /* EDGEC_LOOP_H */
