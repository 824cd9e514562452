/*
 * edgec_plants.c -- the plants of edgec/mpc/plants.py in C (see edgec_plants.h).
 *
 * The arithmetic follows the Python expressions term by term and in the same order (numpy
 * evaluates left to right, element by element), so both round alike; the remaining differences
 * come from the math library (cos, pow) and stay at the level of a few ulp per tick.
 */
#include "edgec_plants.h"

#include <math.h>

#define R(v) ((edgec_real_t)(v))

/* msd params */
#define MSD_M 0
#define MSD_C 1
#define MSD_K 2
/* soft actuator params */
#define SA_INERTIA 0
#define SA_DAMPING 1
#define SA_K1 2
#define SA_K3 3
#define SA_KCC 4
#define SA_FMAX 5
#define SA_RADIUS 6
#define SA_MGL 7

EDGEC_LOOP_FN int edgec_plant_nu(int kind)
{
    if (kind == EDGEC_PLANT_MSD) {
        return 1;
    }
    if (kind == EDGEC_PLANT_SOFT_ACTUATOR) {
        return 2;
    }
    return 0;
}

EDGEC_LOOP_FN int edgec_plant_nparams(int kind)
{
    if (kind == EDGEC_PLANT_MSD) {
        return 3;
    }
    if (kind == EDGEC_PLANT_SOFT_ACTUATOR) {
        return 8;
    }
    return 0;
}

/* dx/dt at x with the (clipped) command u held */
static EDGEC_LOOP_FN void deriv(const edgec_plant_t *pl, const edgec_real_t *x,
                                const edgec_real_t *u, edgec_real_t *dx)
{
    const edgec_real_t *p = pl->p;
    dx[0] = x[1];
    if (pl->kind == EDGEC_PLANT_MSD) {
        dx[1] = (u[0] - p[MSD_C] * x[1] - p[MSD_K] * x[0]) / p[MSD_M];
    } else {
        const edgec_real_t f1 = p[SA_FMAX] * (u[0] * u[0]);
        const edgec_real_t f2 = p[SA_FMAX] * (u[1] * u[1]);
        const edgec_real_t th = x[0];
        const edgec_real_t torque = p[SA_RADIUS] * (f1 - f2)
                                    - (p[SA_K1] + p[SA_KCC] * (f1 + f2)) * th
                                    - p[SA_K3] * R(pow(th, 3.0))
                                    - p[SA_DAMPING] * x[1]
                                    - p[SA_MGL] * R(cos(th));
        dx[1] = torque / p[SA_INERTIA];
    }
}

EDGEC_LOOP_FN void edgec_plant_rest(edgec_plant_t *pl)
{
    pl->x[0] = R(0.0);
    pl->x[1] = R(0.0);
    if (pl->kind == EDGEC_PLANT_SOFT_ACTUATOR) {
        /* Newton on k1 th + k3 th^3 + mgl cos th = 0 (both tendons slack) */
        const edgec_real_t *p = pl->p;
        edgec_real_t th = R(0.0);
        int i;
        for (i = 0; i < 50; ++i) {
            const edgec_real_t f = p[SA_K1] * th + p[SA_K3] * R(pow(th, 3.0))
                                   + p[SA_MGL] * R(cos(th));
            const edgec_real_t df = p[SA_K1] + R(3.0) * p[SA_K3] * R(pow(th, 2.0))
                                    - p[SA_MGL] * R(sin(th));
            th -= f / df;
        }
        pl->x[0] = th;
    }
}

EDGEC_LOOP_FN void edgec_plant_init(edgec_plant_t *pl, int kind, const edgec_real_t *params,
                                    const edgec_real_t *u_min, const edgec_real_t *u_max,
                                    edgec_real_t dt, int substeps)
{
    const int np = edgec_plant_nparams(kind);
    const int nu = edgec_plant_nu(kind);
    int i;
    pl->kind = kind;
    pl->substeps = substeps;
    pl->dt = dt;
    for (i = 0; i < EDGEC_PLANT_MAX_PARAMS; ++i) {
        pl->p[i] = (i < np) ? params[i] : R(0.0);
    }
    for (i = 0; i < EDGEC_PLANT_MAX_NU; ++i) {
        pl->u_min[i] = (i < nu) ? u_min[i] : R(0.0);
        pl->u_max[i] = (i < nu) ? u_max[i] : R(0.0);
    }
    edgec_plant_rest(pl);
}

EDGEC_LOOP_FN void edgec_plant_step(edgec_plant_t *pl, const edgec_real_t *u)
{
    const int nu = edgec_plant_nu(pl->kind);
    const edgec_real_t h = pl->dt / R(pl->substeps);
    const edgec_real_t half_h = R(0.5) * h;
    const edgec_real_t sixth_h = h / R(6.0);
    edgec_real_t uu[EDGEC_PLANT_MAX_NU];
    edgec_real_t k1[EDGEC_PLANT_NX];
    edgec_real_t k2[EDGEC_PLANT_NX];
    edgec_real_t k3[EDGEC_PLANT_NX];
    edgec_real_t k4[EDGEC_PLANT_NX];
    edgec_real_t xt[EDGEC_PLANT_NX];
    int i;
    int s;
    for (i = 0; i < EDGEC_PLANT_MAX_NU; ++i) {
        edgec_real_t v = (i < nu) ? u[i] : R(0.0);
        if (v < pl->u_min[i]) { /* NaN passes, as np.clip lets it */
            v = pl->u_min[i];
        }
        if (v > pl->u_max[i]) {
            v = pl->u_max[i];
        }
        uu[i] = v;
    }
    for (s = 0; s < pl->substeps; ++s) {
        deriv(pl, pl->x, uu, k1);
        for (i = 0; i < EDGEC_PLANT_NX; ++i) {
            xt[i] = pl->x[i] + half_h * k1[i];
        }
        deriv(pl, xt, uu, k2);
        for (i = 0; i < EDGEC_PLANT_NX; ++i) {
            xt[i] = pl->x[i] + half_h * k2[i];
        }
        deriv(pl, xt, uu, k3);
        for (i = 0; i < EDGEC_PLANT_NX; ++i) {
            xt[i] = pl->x[i] + h * k3[i];
        }
        deriv(pl, xt, uu, k4);
        for (i = 0; i < EDGEC_PLANT_NX; ++i) {
            pl->x[i] = pl->x[i] + sixth_h * (k1[i] + R(2.0) * k2[i] + R(2.0) * k3[i] + k4[i]);
        }
    }
}

EDGEC_LOOP_FN edgec_real_t edgec_plant_output(const edgec_plant_t *pl)
{
    return pl->x[0];
}
