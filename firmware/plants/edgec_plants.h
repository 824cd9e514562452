/*
 * edgec_plants.h -- the simulated plants of edgec/mpc/plants.py in C, for batched closed loops.
 *
 * Each plant is a continuous-time model integrated by classic RK4 (fixed substeps) between
 * control ticks with the command held (zero-order hold), exactly as the Python Plant.step():
 * the same equations, the same evaluation order, in EDGEC_PLANT_REAL (double unless defined
 * otherwise), so that a trajectory matches the Python plant to rounding.
 *
 *  - EDGEC_PLANT_MSD: mass-spring-damper  m x'' + c x' + k x = F, y = x, u = F.
 *    params: { m, c, k }
 *  - EDGEC_PLANT_SOFT_ACTUATOR: tendon-driven soft actuator, y = theta, u = (u1, u2).
 *    params: { inertia, damping, k1, k3, k_cc, f_max, radius, mgl }
 *
 * The names, units and nominal values of the parameters live in edgec/mpc/batch.py (one table
 * from the Python plants' defaults); the order above is the order of params[].
 *
 * C99, no globals, no allocation, no recursion: every function may be compiled as device code
 * (define EDGEC_LOOP_FN as __host__ __device__ before including this header).
 */
#ifndef EDGEC_PLANTS_H
#define EDGEC_PLANTS_H

#ifndef EDGEC_LOOP_FN
#define EDGEC_LOOP_FN /* empty on the host; __host__ __device__ for a CUDA build */
#endif

#ifndef EDGEC_PLANT_REAL
#define EDGEC_PLANT_REAL double
#endif
typedef EDGEC_PLANT_REAL edgec_real_t;

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEC_PLANT_MSD 0
#define EDGEC_PLANT_SOFT_ACTUATOR 1

#define EDGEC_PLANT_NX 2         /* states of every plant: (position, velocity) */
#define EDGEC_PLANT_MAX_NU 2     /* commands of the widest plant */
#define EDGEC_PLANT_MAX_PARAMS 8 /* parameters of the plant with the most */

typedef struct {
    int kind;                               /* EDGEC_PLANT_* */
    int substeps;                           /* RK4 steps per control tick */
    edgec_real_t dt;                        /* control tick (s) */
    edgec_real_t p[EDGEC_PLANT_MAX_PARAMS]; /* the physical parameters, order as above */
    edgec_real_t u_min[EDGEC_PLANT_MAX_NU]; /* the actuator's range: commands are clipped */
    edgec_real_t u_max[EDGEC_PLANT_MAX_NU];
    edgec_real_t x[EDGEC_PLANT_NX];         /* the state */
} edgec_plant_t;

/* Commands the plant takes (1 for the MSD, 2 for the soft actuator); 0 for an unknown kind. */
EDGEC_LOOP_FN int edgec_plant_nu(int kind);

/* Parameters of the plant (the length of params[] below). */
EDGEC_LOOP_FN int edgec_plant_nparams(int kind);

/* Sets the plant up and puts it at rest (edgec_plant_rest). u_min/u_max: nu values each. */
EDGEC_LOOP_FN void edgec_plant_init(edgec_plant_t *pl, int kind, const edgec_real_t *params,
                                    const edgec_real_t *u_min, const edgec_real_t *u_max,
                                    edgec_real_t dt, int substeps);

/* The rest state with zero commands: the MSD at the origin; the actuator at the angle where
 * its springs hold gravity (Newton, as SoftActuator.reset()). */
EDGEC_LOOP_FN void edgec_plant_rest(edgec_plant_t *pl);

/* One control tick: clip u to [u_min, u_max], integrate dt with u held. */
EDGEC_LOOP_FN void edgec_plant_step(edgec_plant_t *pl, const edgec_real_t *u);

/* The measured output y (one value: position or angle). */
EDGEC_LOOP_FN edgec_real_t edgec_plant_output(const edgec_plant_t *pl);

#ifdef __cplusplus
}
#endif

#endif /* EDGEC_PLANTS_H */
