/*
 * edgec_batch_host.c -- the host side of the batched simulator: loops split over POSIX threads
 * (edgec_loop.c does one loop), plus the plant alone for checks against the Python plants.
 * Called from Python through ctypes (edgec/mpc/batch.py).
 */
#define _POSIX_C_SOURCE 200112L

#include <pthread.h>
#include <stdlib.h>

#include "edgec_loop.h"

#define MAX_THREADS 256

typedef struct {
    const edgec_loop_spec_t *spec;
    int first;
    int count;
    edgec_loop_result_t *results;
    int status; /* 0, or -1: no memory for the controller */
} job_t;

/* one controller state per thread, reused loop after loop (each loop resets it) */
static void run_job(job_t *job)
{
    edgec_mpc_t *ctrl = (edgec_mpc_t *)malloc(sizeof(edgec_mpc_t));
    int i;
    if (ctrl == NULL) {
        job->status = -1;
        return;
    }
    for (i = job->first; i < job->first + job->count; ++i) {
        edgec_loop_run(job->spec, i, ctrl, &job->results[i], NULL);
    }
    free(ctrl);
    job->status = 0;
}

static void *worker(void *arg)
{
    run_job((job_t *)arg);
    return NULL;
}

/* Runs loops first .. first + count - 1 on `threads` threads (contiguous slices), writing
 * results[i] for each. Returns 0, or -1 when memory ran out. */
int edgec_batch_run(const edgec_loop_spec_t *spec, int first, int count, int threads,
                    edgec_loop_result_t *results)
{
    pthread_t tid[MAX_THREADS];
    job_t jobs[MAX_THREADS];
    int started[MAX_THREADS];
    int t;
    int status = 0;
    if (threads < 1) {
        threads = 1;
    }
    if (threads > MAX_THREADS) {
        threads = MAX_THREADS;
    }
    if (threads > count) {
        threads = (count > 0) ? count : 1;
    }
    for (t = 0; t < threads; ++t) {
        const long lo = (long)count * t / threads;
        const long hi = (long)count * (t + 1) / threads;
        jobs[t].spec = spec;
        jobs[t].first = first + (int)lo;
        jobs[t].count = (int)(hi - lo);
        jobs[t].results = results;
        jobs[t].status = 0;
        started[t] = 0;
    }
    for (t = 1; t < threads; ++t) {
        started[t] = (pthread_create(&tid[t], NULL, worker, &jobs[t]) == 0);
    }
    run_job(&jobs[0]);
    for (t = 1; t < threads; ++t) {
        if (started[t]) {
            (void)pthread_join(tid[t], NULL);
        } else { /* no thread to be had: this one does the slice */
            run_job(&jobs[t]);
        }
    }
    for (t = 0; t < threads; ++t) {
        status = (jobs[t].status != 0) ? jobs[t].status : status;
    }
    return status;
}

/* Runs loop i alone, recording its trajectory (see edgec_loop_run). Returns 0 or -1. */
int edgec_batch_trace(const edgec_loop_spec_t *spec, int i, edgec_loop_result_t *result,
                      double *trace)
{
    edgec_mpc_t *ctrl = (edgec_mpc_t *)malloc(sizeof(edgec_mpc_t));
    if (ctrl == NULL) {
        return -1;
    }
    edgec_loop_run(spec, i, ctrl, result, trace);
    free(ctrl);
    return 0;
}

/* The plant alone, open loop: x[0] = the rest state, x[k + 1] = the state after command row k
 * (n rows of nu values). x: (n + 1) * EDGEC_PLANT_NX values. */
void edgec_batch_plant_rollout(int kind, const double *params, const double *u_min,
                               const double *u_max, double dt, int substeps, int n,
                               const double *u, double *x)
{
    edgec_plant_t pl;
    edgec_real_t p[EDGEC_PLANT_MAX_PARAMS];
    edgec_real_t lo[EDGEC_PLANT_MAX_NU];
    edgec_real_t hi[EDGEC_PLANT_MAX_NU];
    edgec_real_t uk[EDGEC_PLANT_MAX_NU];
    const int nu = edgec_plant_nu(kind);
    int k;
    int j;
    for (j = 0; j < EDGEC_PLANT_MAX_PARAMS; ++j) {
        p[j] = (edgec_real_t)params[j];
    }
    for (j = 0; j < EDGEC_PLANT_MAX_NU; ++j) {
        lo[j] = (j < nu) ? (edgec_real_t)u_min[j] : 0.0;
        hi[j] = (j < nu) ? (edgec_real_t)u_max[j] : 0.0;
    }
    edgec_plant_init(&pl, kind, p, lo, hi, (edgec_real_t)dt, substeps);
    for (j = 0; j < EDGEC_PLANT_NX; ++j) {
        x[j] = (double)pl.x[j];
    }
    for (k = 0; k < n; ++k) {
        for (j = 0; j < EDGEC_PLANT_MAX_NU; ++j) {
            uk[j] = (j < nu) ? (edgec_real_t)u[((long)k * nu) + j] : 0.0;
        }
        edgec_plant_step(&pl, uk);
        for (j = 0; j < EDGEC_PLANT_NX; ++j) {
            x[((long)(k + 1) * EDGEC_PLANT_NX) + j] = (double)pl.x[j];
        }
    }
}
