/*
 * edgec_loop.c -- one closed loop: controller + plant + reference + noise + scoring (see
 * edgec_loop.h). No globals, no allocation, no recursion.
 */
#include "edgec_loop.h"

#include <math.h>

#define NU EDGEC_MPC_NU
#define NY EDGEC_MPC_NY
#define RING (EDGEC_LOOP_MAX_DELAY + 1)

/* the plants measure one output; horizon mode measures their whole state */
typedef char edgec_loop_check_one_tracked_output[(EDGEC_MPC_NY == 1) ? 1 : -1];
typedef char edgec_loop_check_commands_fit_the_plants[(NU <= EDGEC_PLANT_MAX_NU) ? 1 : -1];
#if EDGEC_MPC_HORIZON_MODE
typedef char edgec_loop_check_states_are_the_plant_state[
    (EDGEC_MPC_NX == EDGEC_PLANT_NX) ? 1 : -1];
#endif

/* splitmix64: a counter-based generator, one 64-bit state per loop */
static EDGEC_LOOP_FN unsigned long long next_u64(unsigned long long *s)
{
    unsigned long long z;
    *s += 0x9E3779B97F4A7C15ULL;
    z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* a standard normal draw (Box-Muller, one of the pair) */
static EDGEC_LOOP_FN double gaussian(unsigned long long *s)
{
    const double scale = 1.0 / 9007199254740992.0; /* 2^-53 */
    const double u1 = ((double)(next_u64(s) >> 11) + 1.0) * scale; /* (0, 1] */
    const double u2 = (double)(next_u64(s) >> 11) * scale;         /* [0, 1) */
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static EDGEC_LOOP_FN float measure(double v, double sigma, unsigned long long *s)
{
    return (float)((sigma != 0.0) ? (v + sigma * gaussian(s)) : v);
}

/* the controller's measurement: [ y | 0 (sensors) ] or the state x */
static EDGEC_LOOP_FN void measurement(const edgec_plant_t *pl, double sigma,
                                      unsigned long long *s, float *meas)
{
    int j;
#if EDGEC_MPC_HORIZON_MODE
    for (j = 0; j < EDGEC_MPC_NX; ++j) {
        meas[j] = measure((double)pl->x[j], sigma, s);
    }
#else
    meas[0] = measure((double)edgec_plant_output(pl), sigma, s);
    for (j = NY; j < EDGEC_MPC_MEAS_SIZE; ++j) {
        meas[j] = 0.0f;
    }
#endif
}

EDGEC_LOOP_FN void edgec_loop_run(const edgec_loop_spec_t *spec, int i, edgec_mpc_t *ctrl,
                                  edgec_loop_result_t *result, double *trace)
{
    const int r = spec->ref_index[i];
    const double *ref = spec->refs + ((long)spec->ref_first[r] * NY);
    const int rows = spec->ref_rows[r];
    const int n = rows - 1;
    const double sigma = spec->noise[i];
    int delay = spec->delay[i];
    unsigned long long rng = spec->seed[i];
    edgec_plant_t plant;
    edgec_real_t params[EDGEC_PLANT_MAX_PARAMS];
    edgec_real_t u_min[EDGEC_PLANT_MAX_NU];
    edgec_real_t u_max[EDGEC_PLANT_MAX_NU];
    edgec_real_t sent[RING][NU]; /* commands in flight to the actuator */
    edgec_real_t applied[NU];
    float ref_f[EDGEC_MPC_REF_SIZE];
    float meas[EDGEC_MPC_MEAS_SIZE];
    float u[NU];
    double sq = 0.0;
    double worst = 0.0;
    double iters = 0.0;
    double evals = 0.0;
    double fallbacks = 0.0;
    double u_limit = 0.0;
    double rate_limit = 0.0;
    double no_converge = 0.0;
    int diverged = 0;
    int k;
    int j;

    delay = (delay < 0) ? 0 : ((delay > EDGEC_LOOP_MAX_DELAY) ? EDGEC_LOOP_MAX_DELAY : delay);
    for (j = 0; j < EDGEC_PLANT_MAX_PARAMS; ++j) {
        params[j] = (edgec_real_t)spec->params[((long)i * EDGEC_PLANT_MAX_PARAMS) + j];
    }
    for (j = 0; j < NU; ++j) {
        u_min[j] = (edgec_real_t)spec->u_min[j];
        u_max[j] = (edgec_real_t)spec->u_max[j];
    }
    edgec_plant_init(&plant, spec->plant, params, u_min, u_max, (edgec_real_t)spec->dt,
                     spec->substeps);
    edgec_mpc_init(ctrl);
#if !EDGEC_MPC_HORIZON_MODE
    measurement(&plant, sigma, &rng, meas);
    edgec_mpc_prime(ctrl, meas);
#endif
    for (k = 0; k < n; ++k) {
        const edgec_mpc_report_t *rep;
        unsigned flags;
        double err;
        int h;
        for (h = 0; h < EDGEC_MPC_HORIZON; ++h) {
            const int row = ((k + 1 + h) < rows) ? (k + 1 + h) : (rows - 1);
            for (j = 0; j < NY; ++j) {
                ref_f[(h * NY) + j] = (float)ref[((long)row * NY) + j];
            }
        }
        measurement(&plant, sigma, &rng, meas);
        flags = edgec_mpc_step(ctrl, ref_f, meas, u);
        rep = edgec_mpc_last_report(ctrl);
        for (j = 0; j < NU; ++j) {
            sent[k % RING][j] = (edgec_real_t)u[j];
            applied[j] = (k >= delay) ? sent[(k - delay) % RING][j] : (edgec_real_t)0.0;
        }
        edgec_plant_step(&plant, applied);
        err = (double)edgec_plant_output(&plant) - ref[(long)(k + 1) * NY];
        if (isfinite(err)) {
            sq += err * err;
            worst = (fabs(err) > worst) ? fabs(err) : worst;
        } else {
            diverged = 1;
        }
        iters += (double)rep->iterations;
        evals += (double)rep->evaluations;
        fallbacks += ((flags & EDGEC_MPC_FLAG_FALLBACK) != 0u) ? 1.0 : 0.0;
        u_limit += ((flags & EDGEC_MPC_FLAG_U_LIMIT) != 0u) ? 1.0 : 0.0;
        rate_limit += ((flags & EDGEC_MPC_FLAG_RATE_LIMIT) != 0u) ? 1.0 : 0.0;
        no_converge += ((flags & EDGEC_MPC_FLAG_NO_CONVERGE) != 0u) ? 1.0 : 0.0;
        if (trace != NULL) {
            double *row = trace + ((long)k * EDGEC_LOOP_TRACE_WIDTH);
            row[0] = (double)edgec_plant_output(&plant);
            for (j = 0; j < NU; ++j) {
                row[1 + j] = (double)applied[j];
                row[1 + NU + j] = (double)u[j];
            }
            row[1 + (2 * NU)] = (double)flags;
            row[2 + (2 * NU)] = (double)rep->iterations;
        }
    }
    result->rmse = diverged ? HUGE_VAL : sqrt(sq / (double)n);
    result->max_error = diverged ? HUGE_VAL : worst;
    result->ticks = (double)n;
    result->fallbacks = fallbacks;
    result->u_limit = u_limit;
    result->rate_limit = rate_limit;
    result->no_converge = no_converge;
    result->mean_iterations = iters / (double)n;
    result->mean_evaluations = evals / (double)n;
}

/* Layout facts the caller checks its mirror of the structs against: sizeof(spec),
 * sizeof(result), trace width, max delay, NU, NY, max params, horizon mode. A host function in
 * the CPU and the GPU library alike. */
void edgec_batch_layout(long *out)
{
    out[0] = (long)sizeof(edgec_loop_spec_t);
    out[1] = (long)sizeof(edgec_loop_result_t);
    out[2] = EDGEC_LOOP_TRACE_WIDTH;
    out[3] = EDGEC_LOOP_MAX_DELAY;
    out[4] = EDGEC_MPC_NU;
    out[5] = EDGEC_MPC_NY;
    out[6] = EDGEC_PLANT_MAX_PARAMS;
    out[7] = EDGEC_MPC_HORIZON_MODE;
}
