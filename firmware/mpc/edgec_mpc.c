/*
 * edgec_mpc.c -- Newton-type MPC runtime (see edgec_mpc.h). C99, no malloc, no recursion.
 */
#define EDGEC_MPC_IMPLEMENTATION
#include "edgec_mpc.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define NU EDGEC_MPC_NU
#define NY EDGEC_MPC_NY
#define NOUT EDGEC_MPC_NOUT
#define NJ EDGEC_MPC_NJ
#define HZN EDGEC_MPC_HORIZON
#define NDEC EDGEC_MPC_NDEC

/* Compile-time checks of the invariants this file relies on: a hand-edited configuration that
 * does not match the model or itself fails to compile, naming the check (C99: an array type of
 * negative size; edgec_mpc_check_<name> in the compiler's message). */
#define MPC_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef char edgec_mpc_check_commands_positive[(EDGEC_MPC_NU >= 1) ? 1 : -1];
typedef char edgec_mpc_check_outputs_positive[(EDGEC_MPC_NY >= 1) ? 1 : -1];
typedef char edgec_mpc_check_lags_not_negative[
    ((EDGEC_MPC_LU >= 0) && (EDGEC_MPC_LY >= 0) && (EDGEC_MPC_NS >= 0)) ? 1 : -1];
typedef char edgec_mpc_check_iterations_positive[(EDGEC_MPC_MAX_ITER >= 1) ? 1 : -1];
typedef char edgec_mpc_check_model_inputs_match_model[
    (EDGEC_MPC_NZ == EDGEC_MPC_MODEL_IN_SIZE) ? 1 : -1];
typedef char edgec_mpc_check_model_outputs_match_model[
    (EDGEC_MPC_NOUT == EDGEC_MPC_MODEL_OUT_SIZE) ? 1 : -1];
#if EDGEC_MPC_JACOBIAN_EXACT
typedef char edgec_mpc_check_jacobian_matches_model[
    ((EDGEC_MPC_NOUT * EDGEC_MPC_NJ) == EDGEC_MPC_MODEL_JAC_SIZE) ? 1 : -1];
#endif
#if EDGEC_MPC_HORIZON_MODE
typedef char edgec_mpc_check_states_positive[(EDGEC_MPC_NX >= 1) ? 1 : -1];
typedef char edgec_mpc_check_horizon_positive[(EDGEC_MPC_HORIZON >= 1) ? 1 : -1];
typedef char edgec_mpc_check_model_inputs_are_states_and_commands[
    (EDGEC_MPC_NZ == (EDGEC_MPC_NX + EDGEC_MPC_NU)) ? 1 : -1];
typedef char edgec_mpc_check_model_outputs_are_states[(EDGEC_MPC_NOUT == EDGEC_MPC_NX) ? 1 : -1];
typedef char edgec_mpc_check_jacobian_columns_are_model_inputs[
    (EDGEC_MPC_NJ == EDGEC_MPC_NZ) ? 1 : -1];
typedef char edgec_mpc_check_q_has_one_weight_per_output[
    (MPC_LEN(edgec_mpc_q) == (size_t)EDGEC_MPC_NY) ? 1 : -1];
typedef char edgec_mpc_check_out_index_has_one_entry_per_output[
    (MPC_LEN(edgec_mpc_out_index) == (size_t)EDGEC_MPC_NY) ? 1 : -1];
#else
typedef char edgec_mpc_check_one_step_horizon_is_one[(EDGEC_MPC_HORIZON == 1) ? 1 : -1];
typedef char edgec_mpc_check_model_inputs_match_lags[
    (EDGEC_MPC_NZ == ((EDGEC_MPC_NU * (1 + EDGEC_MPC_LU)) + (EDGEC_MPC_NY * EDGEC_MPC_LY) +
                      EDGEC_MPC_NS)) ? 1 : -1];
typedef char edgec_mpc_check_model_outputs_are_outputs[(EDGEC_MPC_NOUT == EDGEC_MPC_NY) ? 1 : -1];
typedef char edgec_mpc_check_jacobian_columns_are_commands[(EDGEC_MPC_NJ == EDGEC_MPC_NU) ? 1 : -1];
typedef char edgec_mpc_check_newton_needs_square_system[
    ((EDGEC_MPC_NEWTON == 0) || (EDGEC_MPC_NU == EDGEC_MPC_NY)) ? 1 : -1];
#endif
typedef char edgec_mpc_check_u_min_has_one_value_per_command[
    (MPC_LEN(edgec_mpc_u_min) == (size_t)EDGEC_MPC_NU) ? 1 : -1];
typedef char edgec_mpc_check_u_max_has_one_value_per_command[
    (MPC_LEN(edgec_mpc_u_max) == (size_t)EDGEC_MPC_NU) ? 1 : -1];
typedef char edgec_mpc_check_du_max_has_one_value_per_command[
    (MPC_LEN(edgec_mpc_du_max) == (size_t)EDGEC_MPC_NU) ? 1 : -1];
typedef char edgec_mpc_check_u_init_has_one_value_per_command[
    (MPC_LEN(edgec_mpc_u_init) == (size_t)EDGEC_MPC_NU) ? 1 : -1];
typedef char edgec_mpc_check_du_weight_has_one_value_per_command[
    (MPC_LEN(edgec_mpc_du_weight) == (size_t)EDGEC_MPC_NU) ? 1 : -1];

/* the damping after an accepted step: a tenth, at least 1e-7 */
static EDGEC_MPC_FN float damping_down(float lambda)
{
    float next = lambda * 0.1f;
    if (next < 1e-7f) {
        next = 1e-7f;
    }
    return next;
}

/* line-search / damping trials per iteration */
#define MPC_TRIES 4

/* NaN/inf tests on the IEEE-754 bit pattern: unlike isfinite() or !(v >= lo), they survive
 * -ffast-math / -ffinite-math-only, under which the compiler assumes no NaN and folds those */
#define MPC_EXP_MASK 0x7f800000u
#define MPC_MANT_MASK 0x007fffffu
#define MPC_SIGN_MASK 0x80000000u

static EDGEC_MPC_FN uint32_t float_bits(float v)
{
    uint32_t b;
    (void)memcpy(&b, &v, sizeof(b));
    return b;
}

static EDGEC_MPC_FN int is_finite(float v)
{
    return (float_bits(v) & MPC_EXP_MASK) != MPC_EXP_MASK;
}

static EDGEC_MPC_FN int all_finite(const float *v, int n)
{
    int i;
    for (i = 0; i < n; ++i) {
        if (!is_finite(v[i])) {
            return 0;
        }
    }
    return 1;
}

/* a tick starts from a clean report and warm-starts from the last applied command */
static EDGEC_MPC_FN void begin_tick(edgec_mpc_t *c, float *u)
{
    int j;
    c->report.iterations = 0u;
    c->report.evaluations = 0u;
    c->report.residual = 0.0f;
    c->report.cost = 0.0f;
    for (j = 0; j < NU; ++j) {
        u[j] = c->u_last[j];
    }
}

/* clamp that also maps NaN to the lower bound: the result is always in [lo, hi] */
static EDGEC_MPC_FN float clampf(float v, float lo, float hi)
{
    const uint32_t b = float_bits(v);
    if (!is_finite(v)) { /* +inf to hi; NaN and -inf to lo */
        return (((b & MPC_MANT_MASK) == 0u) && ((b & MPC_SIGN_MASK) == 0u)) ? hi : lo;
    }
    if (v < lo) {
        return lo;
    }
    if (v > hi) {
        return hi;
    }
    return v;
}

/* per-command bounds of this tick: box limits intersected with the rate limit around `prev` */
static EDGEC_MPC_FN void tick_bounds(const float *prev, float *lo, float *hi)
{
    int j;
    for (j = 0; j < NU; ++j) {
        const float a = prev[j] - edgec_mpc_du_max[j];
        const float b = prev[j] + edgec_mpc_du_max[j];
        lo[j] = (a > edgec_mpc_u_min[j]) ? a : edgec_mpc_u_min[j];
        hi[j] = (b < edgec_mpc_u_max[j]) ? b : edgec_mpc_u_max[j];
        if (lo[j] > hi[j]) { /* rounding only: prev is always inside the box */
            lo[j] = hi[j];
        }
    }
}

static EDGEC_MPC_FN unsigned limit_flags(const float *u, const float *prev)
{
    unsigned f = 0u;
    int j;
    for (j = 0; j < NU; ++j) {
        if ((u[j] <= edgec_mpc_u_min[j]) || (u[j] >= edgec_mpc_u_max[j])) {
            f |= EDGEC_MPC_FLAG_U_LIMIT;
        }
        if ((u[j] <= (prev[j] - edgec_mpc_du_max[j])) || (u[j] >= (prev[j] + edgec_mpc_du_max[j]))) {
            f |= EDGEC_MPC_FLAG_RATE_LIMIT;
        }
    }
    return f;
}

/* One model evaluation: out = g(z) and jac[NOUT][NJ] = d out / d z[0..NJ-1]. Returns 0 when
 * anything is not finite. */
static EDGEC_MPC_FN int model_eval(edgec_mpc_t *c, float *z, float *out, float *jac)
{
#if EDGEC_MPC_JACOBIAN_EXACT
    EDGEC_MPC_MODEL_JAC(c->model_arena, z, out, jac);
    c->report.evaluations += 1u;
#else
    float yp[NOUT];
    float ym[NOUT];
    int i;
    int j;
    EDGEC_MPC_MODEL(c->model_arena, z, out);
    for (j = 0; j < NJ; ++j) {
        const float keep = z[j];
        const float h = EDGEC_MPC_FD_STEP * ((fabsf(keep) > 1.0f) ? fabsf(keep) : 1.0f);
        float span;
        z[j] = keep + h;
        span = z[j];
        EDGEC_MPC_MODEL(c->model_arena, z, yp);
        z[j] = keep - h;
        span -= z[j];
        EDGEC_MPC_MODEL(c->model_arena, z, ym);
        z[j] = keep;
        for (i = 0; i < NOUT; ++i) {
            jac[(i * NJ) + j] = (yp[i] - ym[i]) / span;
        }
    }
    c->report.evaluations += 1u + (2u * (unsigned)NJ);
#endif
    return all_finite(out, NOUT) && all_finite(jac, NOUT * NJ);
}

/* Solves (A + diag(A) * lambda + tiny) d = -g by Cholesky (A symmetric positive semi-definite,
 * n x n). Returns 0 when the damped matrix is not positive definite. */
static EDGEC_MPC_FN int damped_solve(const float *a, const float *g, float lambda, float *m,
                                     float *d)
{
    int i;
    int j;
    int k;
    float maxdiag = 0.0f;
    for (i = 0; i < NDEC; ++i) {
        maxdiag = (a[(i * NDEC) + i] > maxdiag) ? a[(i * NDEC) + i] : maxdiag;
    }
    for (i = 0; i < (NDEC * NDEC); ++i) {
        m[i] = a[i];
    }
    for (i = 0; i < NDEC; ++i) {
        const float di = a[(i * NDEC) + i];
        const float floor_ = 1e-6f * maxdiag;
        m[(i * NDEC) + i] = di + (lambda * ((di > floor_) ? di : floor_)) + 1e-30f;
    }
    /* m = L L^T, L stored in the lower triangle */
    for (j = 0; j < NDEC; ++j) {
        float s = m[(j * NDEC) + j];
        for (k = 0; k < j; ++k) {
            s -= m[(j * NDEC) + k] * m[(j * NDEC) + k];
        }
        if ((!is_finite(s)) || (s <= 0.0f)) {
            return 0;
        }
        s = sqrtf(s);
        m[(j * NDEC) + j] = s;
        for (i = j + 1; i < NDEC; ++i) {
            float t = m[(i * NDEC) + j];
            for (k = 0; k < j; ++k) {
                t -= m[(i * NDEC) + k] * m[(j * NDEC) + k];
            }
            m[(i * NDEC) + j] = t / s;
        }
    }
    for (i = 0; i < NDEC; ++i) { /* L y = -g */
        float t = -g[i];
        for (k = 0; k < i; ++k) {
            t -= m[(i * NDEC) + k] * d[k];
        }
        d[i] = t / m[(i * NDEC) + i];
    }
    for (i = NDEC - 1; i >= 0; --i) { /* L^T d = y */
        float t = d[i];
        for (k = i + 1; k < NDEC; ++k) {
            t -= m[(k * NDEC) + i] * d[k];
        }
        d[i] = t / m[(i * NDEC) + i];
    }
    return all_finite(d, NDEC);
}

/* ------------------------------------------------------------------------------------------ */
#if !EDGEC_MPC_HORIZON_MODE

#define NS EDGEC_MPC_NS
#define LU EDGEC_MPC_LU
#define LY EDGEC_MPC_LY
#define NZ EDGEC_MPC_NZ

/* Newton system J d = -r (square, NY == NU) by Gaussian elimination with partial pivoting.
 * Returns 0 when J is singular to working precision. */
#if EDGEC_MPC_NEWTON
static EDGEC_MPC_FN int newton_solve(const float *jac, const float *r, float *d)
{
    float a[NU * NU];
    float b[NU];
    float scale = 0.0f;
    int i;
    int j;
    int k;
    for (i = 0; i < (NU * NU); ++i) {
        a[i] = jac[i];
        scale = (fabsf(a[i]) > scale) ? fabsf(a[i]) : scale;
    }
    for (i = 0; i < NU; ++i) {
        b[i] = -r[i];
    }
    for (k = 0; k < NU; ++k) {
        int piv = k;
        for (i = k + 1; i < NU; ++i) {
            if (fabsf(a[(i * NU) + k]) > fabsf(a[(piv * NU) + k])) {
                piv = i;
            }
        }
        if ((!is_finite(a[(piv * NU) + k])) || (fabsf(a[(piv * NU) + k]) <= (1e-6f * scale))) {
            return 0;
        }
        if (piv != k) {
            float t;
            for (j = 0; j < NU; ++j) {
                t = a[(k * NU) + j];
                a[(k * NU) + j] = a[(piv * NU) + j];
                a[(piv * NU) + j] = t;
            }
            t = b[k];
            b[k] = b[piv];
            b[piv] = t;
        }
        for (i = k + 1; i < NU; ++i) {
            const float f = a[(i * NU) + k] / a[(k * NU) + k];
            for (j = k; j < NU; ++j) {
                a[(i * NU) + j] -= f * a[(k * NU) + j];
            }
            b[i] -= f * b[k];
        }
    }
    for (i = NU - 1; i >= 0; --i) {
        float t = b[i];
        for (j = i + 1; j < NU; ++j) {
            t -= a[(i * NU) + j] * d[j];
        }
        d[i] = t / a[(i * NU) + i];
    }
    return all_finite(d, NU);
}
#endif

EDGEC_MPC_FN void edgec_mpc_model_input(const edgec_mpc_t *c, const float *u, float *z)
{
    int j;
    int k;
    int at = 0;
    for (j = 0; j < NU; ++j) {
        z[at] = u[j];
        ++at;
    }
    for (k = 0; k < LU; ++k) { /* u(t-1-k) */
        const unsigned slot = (c->u_head + ((unsigned)LU - (unsigned)k)) % (unsigned)EDGEC_MPC_DIM(LU);
        for (j = 0; j < NU; ++j) {
            z[at] = c->u_hist[(slot * (unsigned)NU) + (unsigned)j];
            ++at;
        }
    }
    for (k = 0; k < LY; ++k) { /* y(t-k) */
        const unsigned slot = (c->y_head + ((unsigned)LY - (unsigned)k)) % (unsigned)EDGEC_MPC_DIM(LY);
        for (j = 0; j < NY; ++j) {
            z[at] = c->y_hist[(slot * (unsigned)NY) + (unsigned)j];
            ++at;
        }
    }
    for (j = 0; j < NS; ++j) {
        z[at] = c->sensors[j];
        ++at;
    }
}

/* push the newest n-vector v into a ring of `lags` slots (no-op without lags) */
static EDGEC_MPC_FN void push_ring(float *hist, unsigned *head, unsigned lags, const float *v,
                                   int n)
{
    int j;
    if (lags == 0u) {
        return;
    }
    *head = (*head + 1u) % lags;
    for (j = 0; j < n; ++j) {
        hist[(*head * (unsigned)n) + (unsigned)j] = v[j];
    }
}

static EDGEC_MPC_FN void push_output(edgec_mpc_t *c, const float *y)
{
    push_ring(c->y_hist, &c->y_head, (unsigned)LY, y, NY);
}

static EDGEC_MPC_FN void push_command(edgec_mpc_t *c, const float *u)
{
    push_ring(c->u_hist, &c->u_head, (unsigned)LU, u, NU);
}

typedef struct {
    float u[NU];
    float z[NZ];
    float y[NY];
    float jac[NY * NU];
    float cost;
    float rmax;
} point_t;

/* whether z is, bit for bit, the model input of the last tick's final iterate */
static EDGEC_MPC_FN int same_as_last(const edgec_mpc_t *c, const float *z)
{
    int same = 0;
    int j;
    if (c->last_valid != 0u) {
        same = 1;
    }
    for (j = 0; (j < NZ) && (same != 0); ++j) {
        if (float_bits(z[j]) != float_bits(c->last_z[j])) {
            same = 0;
        }
    }
    return same;
}

/* keeps the model at p (a finite evaluation) for the next tick */
static EDGEC_MPC_FN void keep_last(edgec_mpc_t *c, const point_t *p)
{
    (void)memcpy(c->last_z, p->z, sizeof(c->last_z));
    (void)memcpy(c->last_y, p->y, sizeof(c->last_y));
    (void)memcpy(c->last_jac, p->jac, sizeof(c->last_jac));
    c->last_valid = 1u;
}

/* evaluates the model at p->u (or, with may_reuse, takes the last tick's final evaluation when
 * the model input is the same); fills y, jac, the objective and the max residual */
static EDGEC_MPC_FN int eval_point(edgec_mpc_t *c, const float *y_ref, point_t *p, int may_reuse)
{
    int i;
    int j;
    float cost = 0.0f;
    float rmax = 0.0f;
    edgec_mpc_model_input(c, p->u, p->z);
    if ((may_reuse != 0) && (same_as_last(c, p->z) != 0)) {
        (void)memcpy(p->y, c->last_y, sizeof(p->y));
        (void)memcpy(p->jac, c->last_jac, sizeof(p->jac));
    } else if (!model_eval(c, p->z, p->y, p->jac)) {
        return 0;
    } else {
        /* evaluated */
    }
    for (i = 0; i < NY; ++i) {
        const float r = p->y[i] - y_ref[i];
        cost += r * r;
        rmax = (fabsf(r) > rmax) ? fabsf(r) : rmax;
    }
    for (j = 0; j < NU; ++j) {
        const float du = p->u[j] - c->u_last[j];
        cost += edgec_mpc_du_weight[j] * du * du;
    }
    p->cost = 0.5f * cost;
    p->rmax = rmax;
    return 1;
}

/* gradient of the objective and the Gauss-Newton matrix J^T J + diag(w) */
static EDGEC_MPC_FN void normal_equations(const edgec_mpc_t *c, const float *y_ref,
                                          const point_t *p, float *a, float *g)
{
    int i;
    int j;
    int k;
    for (j = 0; j < NU; ++j) {
        float s = edgec_mpc_du_weight[j] * (p->u[j] - c->u_last[j]);
        for (i = 0; i < NY; ++i) {
            s += p->jac[(i * NU) + j] * (p->y[i] - y_ref[i]);
        }
        g[j] = s;
        for (k = 0; k < NU; ++k) {
            float t = (j == k) ? edgec_mpc_du_weight[j] : 0.0f;
            for (i = 0; i < NY; ++i) {
                t += p->jac[(i * NU) + j] * p->jac[(i * NU) + k];
            }
            a[(j * NU) + k] = t;
        }
    }
}

/* returns the flags; writes the solution to u (unchanged on fallback); lo, hi: this tick's
 * command bounds (tick_bounds around c->u_last) */
static EDGEC_MPC_FN unsigned solve_one_step(edgec_mpc_t *c, const float *y_ref,
                                            const float *lo, const float *hi, float *u)
{
    point_t cur;
    point_t trial;
    float a[NU * NU];
    float m[NU * NU];
    float g[NU];
    float d[NU]; /* set by newton_solve or damped_solve before use */
    float lambda = EDGEC_MPC_DAMPING;
    float alpha;
    unsigned flags = 0u;
    int it;
    int j;
    (void)memset(d, 0, sizeof(d));
    (void)memset(a, 0, sizeof(a)); /* set by normal_equations before damped_solve reads it */
    (void)memset(g, 0, sizeof(g));
    for (j = 0; j < NU; ++j) {
        cur.u[j] = clampf(c->u_plan[j], lo[j], hi[j]);
    }
    if (!eval_point(c, y_ref, &cur, 1)) {
        return EDGEC_MPC_FLAG_NONFINITE_MODEL | EDGEC_MPC_FLAG_FALLBACK;
    }
    for (it = 0; it < EDGEC_MPC_MAX_ITER; ++it) {
        int t;
        int accepted = 0;
        int newton = 0;
        float step = 0.0f;
        if (cur.rmax <= EDGEC_MPC_TOL) {
            flags |= EDGEC_MPC_FLAG_CONVERGED;
            break;
        }
        c->report.iterations += 1u;
#if EDGEC_MPC_NEWTON
        {
            float r[NY];
            for (j = 0; j < NY; ++j) {
                r[j] = cur.y[j] - y_ref[j];
            }
            newton = newton_solve(cur.jac, r, d);
        }
        if (!newton) {
            flags |= EDGEC_MPC_FLAG_SINGULAR;
        }
#endif
        if (newton == 0) { /* the damped (LM) steps' system; a Newton step needs none */
            normal_equations(c, y_ref, &cur, a, g);
        }
        alpha = 1.0f;
        for (t = 0; (t < MPC_TRIES) && (accepted == 0); ++t) {
            if (newton != 0) {
                for (j = 0; j < NU; ++j) {
                    trial.u[j] = clampf(cur.u[j] + (alpha * d[j]), lo[j], hi[j]);
                }
                alpha *= 0.5f; /* backtracking: 1, 1/2, 1/4, ... */
            } else {
                if (!damped_solve(a, g, lambda, m, d)) {
                    lambda *= 10.0f;
                    continue;
                }
                for (j = 0; j < NU; ++j) {
                    trial.u[j] = clampf(cur.u[j] + d[j], lo[j], hi[j]);
                }
            }
            if (eval_point(c, y_ref, &trial, 0) && (trial.cost < cur.cost)) {
                accepted = 1;
                if (!newton) {
                    lambda = damping_down(lambda);
                }
            } else if (newton == 0) {
                lambda *= 10.0f;
            } else {
                /* Newton: the next try halves the step */
            }
        }
        if (!accepted) {
            flags |= EDGEC_MPC_FLAG_STATIONARY;
            break;
        }
        for (j = 0; j < NU; ++j) {
            const float s = fabsf(trial.u[j] - cur.u[j]);
            step = (s > step) ? s : step;
        }
        cur = trial;
        if (cur.rmax <= EDGEC_MPC_TOL) {
            flags |= EDGEC_MPC_FLAG_CONVERGED;
            break;
        }
        if (step <= EDGEC_MPC_STEP_TOL) {
            flags |= EDGEC_MPC_FLAG_STATIONARY;
            break;
        }
    }
    keep_last(c, &cur);
    c->report.residual = cur.rmax;
    c->report.cost = cur.cost;
    if (!(flags & (EDGEC_MPC_FLAG_CONVERGED | EDGEC_MPC_FLAG_STATIONARY))) {
        return flags | EDGEC_MPC_FLAG_NO_CONVERGE | EDGEC_MPC_FLAG_FALLBACK;
    }
    for (j = 0; j < NU; ++j) {
        u[j] = cur.u[j];
    }
    return flags;
}

EDGEC_MPC_FN void edgec_mpc_prime(edgec_mpc_t *c, const float *measurement)
{
    int k;
    int j;
    if (!all_finite(measurement, NY + NS)) {
        return;
    }
    for (k = 0; k < LY; ++k) {
        push_output(c, measurement);
    }
    for (j = 0; j < NS; ++j) {
        c->sensors[j] = measurement[NY + j];
    }
}

EDGEC_MPC_FN unsigned edgec_mpc_step(edgec_mpc_t *c, const float *y_ref,
                                     const float *measurement, float *u_out)
{
    float u[NU];
    float lo[NU];
    float hi[NU];
    unsigned flags;
    int j;
    begin_tick(c, u);
    tick_bounds(c->u_last, lo, hi); /* u_last changes only at the end of the tick */
    if (!all_finite(y_ref, NY) || !all_finite(measurement, NY + NS)) {
        /* hold: the delay line repeats its newest output, the sensors keep their last values */
#if LY > 0
        float held[NY];
        for (j = 0; j < NY; ++j) {
            held[j] = c->y_hist[(c->y_head * (unsigned)NY) + (unsigned)j];
        }
        push_output(c, held);
#endif
        flags = EDGEC_MPC_FLAG_NONFINITE_INPUT | EDGEC_MPC_FLAG_FALLBACK;
        c->report.residual = NAN;
        c->report.cost = NAN;
    } else {
        push_output(c, measurement);
        for (j = 0; j < NS; ++j) {
            c->sensors[j] = measurement[NY + j];
        }
        flags = solve_one_step(c, y_ref, lo, hi, u);
    }
    for (j = 0; j < NU; ++j) {
        u[j] = clampf(u[j], lo[j], hi[j]);
    }
    flags |= limit_flags(u, c->u_last);
    for (j = 0; j < NU; ++j) {
        u_out[j] = u[j];
        c->u_last[j] = u[j];
        c->u_plan[j] = u[j];
    }
    push_command(c, u);
    c->ticks += 1u;
    c->report.flags = flags;
    return flags;
}

/* ------------------------------------------------------------------------------------------ */
#else /* horizon mode */

#define NX EDGEC_MPC_NX


typedef edgec_mpc_plan_t plan_t;
typedef edgec_mpc_work_t work_t;

EDGEC_MPC_FN void edgec_mpc_model_input(const edgec_mpc_t *c, const float *u, float *z)
{
    int j;
    (void)c;
    for (j = 0; j < NX; ++j) {
        z[j] = 0.0f;
    }
    for (j = 0; j < NU; ++j) {
        z[NX + j] = u[j];
    }
}

/* makes the plan feasible: each u_k in the box and within du_max of u_{k-1} */
static EDGEC_MPC_FN void project_plan(const float *u_last, float *u)
{
    float lo[NU];
    float hi[NU];
    int k;
    int j;
    for (k = 0; k < HZN; ++k) {
        tick_bounds((k == 0) ? u_last : &u[(k - 1) * NU], lo, hi);
        for (j = 0; j < NU; ++j) {
            u[(k * NU) + j] = clampf(u[(k * NU) + j], lo[j], hi[j]);
        }
    }
}

/* rolls the model over the horizon from x0; cost, max tracking error, and (chained Jacobians)
 * the Gauss-Newton matrix and gradient of the weighted residuals */
static EDGEC_MPC_FN int rollout(edgec_mpc_t *c, work_t *w, const float *x0, const float *y_ref,
                                plan_t *p)
{
    float x[NX];
    float cost = 0.0f;
    float rmax = 0.0f;
    int k;
    int i;
    int j;
    int n;
    for (i = 0; i < NX; ++i) {
        x[i] = x0[i];
    }
    (void)memset(w->sens, 0, sizeof(w->sens));
    (void)memset(p->a, 0, sizeof(p->a));
    (void)memset(p->g, 0, sizeof(p->g));
    for (k = 0; k < HZN; ++k) {
        /* move cost w_j (u_k - u_{k-1})^2: rows with +1 at (k, j) and -1 at (k-1, j) */
        for (j = 0; j < NU; ++j) {
            const float wj = edgec_mpc_du_weight[j];
            const int a_ = (k * NU) + j;
            const float prev = (k == 0) ? c->u_last[j] : p->u[((k - 1) * NU) + j];
            const float du = p->u[a_] - prev;
            cost += wj * du * du;
            p->g[a_] += wj * du;
            p->a[(a_ * NDEC) + a_] += wj;
            if (k > 0) {
                const int b_ = ((k - 1) * NU) + j;
                p->g[b_] -= wj * du;
                p->a[(b_ * NDEC) + b_] += wj;
                p->a[(a_ * NDEC) + b_] -= wj;
                p->a[(b_ * NDEC) + a_] -= wj;
            }
        }
        for (i = 0; i < NX; ++i) {
            w->z[i] = x[i];
        }
        for (j = 0; j < NU; ++j) {
            w->z[NX + j] = p->u[(k * NU) + j];
        }
        if (!model_eval(c, w->z, w->xn, w->jac)) {
            return 0;
        }
        /* sens2 = A_k sens + B_k E_k */
        for (i = 0; i < NX; ++i) {
            for (n = 0; n < NDEC; ++n) {
                float s = 0.0f;
                int q;
                for (q = 0; q < NX; ++q) {
                    s += w->jac[(i * NJ) + q] * w->sens[(q * NDEC) + n];
                }
                w->sens2[(i * NDEC) + n] = s;
            }
            for (j = 0; j < NU; ++j) {
                w->sens2[(i * NDEC) + (k * NU) + j] += w->jac[(i * NJ) + NX + j];
            }
        }
        (void)memcpy(w->sens, w->sens2, sizeof(w->sens));
        for (i = 0; i < NX; ++i) {
            x[i] = w->xn[i];
        }
        /* tracking rows: sqrt(q_o) (x_{k+1}[out_o] - r_{k,o}) */
        for (i = 0; i < NY; ++i) {
            const int o = edgec_mpc_out_index[i];
            const float qo = edgec_mpc_q[i];
            const float e = x[o] - y_ref[(k * NY) + i];
            const float *row = &w->sens[o * NDEC];
            cost += qo * e * e;
            rmax = (fabsf(e) > rmax) ? fabsf(e) : rmax;
            for (n = 0; n < NDEC; ++n) {
                int q;
                p->g[n] += qo * row[n] * e;
                for (q = 0; q < NDEC; ++q) {
                    p->a[(n * NDEC) + q] += qo * row[n] * row[q];
                }
            }
        }
    }
    p->cost = 0.5f * cost;
    p->rmax = rmax;
    return 1;
}

static EDGEC_MPC_FN unsigned solve_horizon(edgec_mpc_t *c, const float *x0, const float *y_ref,
                                           float *u)
{
    plan_t *cur = &c->plans[0];
    plan_t *trial = &c->plans[1];
    work_t *w = &c->work;
    float lambda = EDGEC_MPC_DAMPING;
    unsigned flags = 0u;
    int it;
    int k;
    int n;
    /* warm start: the last plan shifted by one tick */
    for (k = 0; k < HZN; ++k) {
        int src = HZN - 1;
        if ((k + 1) < HZN) {
            src = k + 1;
        }
        for (n = 0; n < NU; ++n) {
            cur->u[(k * NU) + n] = c->u_plan[(src * NU) + n];
        }
    }
    project_plan(c->u_last, cur->u);
    if (!rollout(c, w, x0, y_ref, cur)) {
        return EDGEC_MPC_FLAG_NONFINITE_MODEL | EDGEC_MPC_FLAG_FALLBACK;
    }
    for (it = 0; it < EDGEC_MPC_MAX_ITER; ++it) {
        int t;
        int accepted = 0;
        float step = 0.0f;
        if (cur->rmax <= EDGEC_MPC_TOL) {
            flags |= EDGEC_MPC_FLAG_CONVERGED;
            break;
        }
        c->report.iterations += 1u;
        for (t = 0; (t < MPC_TRIES) && !accepted; ++t) {
            if (!damped_solve(cur->a, cur->g, lambda, w->m, w->d)) {
                lambda *= 10.0f;
                continue;
            }
            for (n = 0; n < NDEC; ++n) {
                trial->u[n] = cur->u[n] + w->d[n];
            }
            project_plan(c->u_last, trial->u);
            if (rollout(c, w, x0, y_ref, trial) && (trial->cost < cur->cost)) {
                accepted = 1;
                lambda = damping_down(lambda);
            } else {
                lambda *= 10.0f;
            }
        }
        if (!accepted) {
            flags |= EDGEC_MPC_FLAG_STATIONARY;
            break;
        }
        for (n = 0; n < NDEC; ++n) {
            const float s = fabsf(trial->u[n] - cur->u[n]);
            step = (s > step) ? s : step;
        }
        {
            plan_t *swap = cur;
            cur = trial;
            trial = swap;
        }
        if (step <= EDGEC_MPC_STEP_TOL) {
            flags |= EDGEC_MPC_FLAG_STATIONARY;
            break;
        }
    }
    if (it == EDGEC_MPC_MAX_ITER) {
        /* fixed budget: the plan only ever improved on the feasible warm start, apply it */
        flags |= EDGEC_MPC_FLAG_NO_CONVERGE;
    }
    c->report.residual = cur->rmax;
    c->report.cost = cur->cost;
    for (n = 0; n < NDEC; ++n) {
        c->u_plan[n] = cur->u[n];
    }
    for (n = 0; n < NU; ++n) {
        u[n] = cur->u[n];
    }
    return flags;
}

EDGEC_MPC_FN void edgec_mpc_prime(edgec_mpc_t *c, const float *measurement)
{
    (void)c;
    (void)measurement;
}

EDGEC_MPC_FN unsigned edgec_mpc_step(edgec_mpc_t *c, const float *y_ref,
                                     const float *measurement, float *u_out)
{
    float u[NU];
    float lo[NU];
    float hi[NU];
    unsigned flags;
    int j;
    begin_tick(c, u);
    if (!all_finite(y_ref, HZN * NY) || !all_finite(measurement, NX)) {
        flags = EDGEC_MPC_FLAG_NONFINITE_INPUT | EDGEC_MPC_FLAG_FALLBACK;
        c->report.residual = NAN;
        c->report.cost = NAN;
    } else {
        flags = solve_horizon(c, measurement, y_ref, u);
    }
    tick_bounds(c->u_last, lo, hi);
    for (j = 0; j < NU; ++j) {
        u[j] = clampf(u[j], lo[j], hi[j]);
    }
    flags |= limit_flags(u, c->u_last);
    for (j = 0; j < NU; ++j) {
        u_out[j] = u[j];
        c->u_last[j] = u[j];
    }
    if ((flags & EDGEC_MPC_FLAG_FALLBACK) != 0u) {
        for (j = 0; j < NDEC; ++j) {
            c->u_plan[j] = u[j % NU];
        }
    }
    c->ticks += 1u;
    c->report.flags = flags;
    return flags;
}

#endif /* EDGEC_MPC_HORIZON_MODE */

/* ------------------------------------------------------------------------------------------ */
EDGEC_MPC_FN void edgec_mpc_init(edgec_mpc_t *c)
{
    int j;
    int k;
    (void)memset(c, 0, sizeof(*c));
    for (j = 0; j < NU; ++j) {
        c->u_last[j] = clampf(edgec_mpc_u_init[j], edgec_mpc_u_min[j], edgec_mpc_u_max[j]);
    }
    for (k = 0; k < HZN; ++k) {
        for (j = 0; j < NU; ++j) {
            c->u_plan[(k * NU) + j] = c->u_last[j];
        }
    }
    for (k = 0; k < EDGEC_MPC_LU; ++k) {
        for (j = 0; j < NU; ++j) {
            c->u_hist[(k * NU) + j] = c->u_last[j];
        }
    }
}

EDGEC_MPC_FN const edgec_mpc_report_t *edgec_mpc_last_report(const edgec_mpc_t *c)
{
    return &c->report;
}

EDGEC_MPC_FN size_t edgec_mpc_sizeof(void)
{
    return sizeof(edgec_mpc_t);
}
