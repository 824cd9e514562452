/*
 * edgec_mpc_tanhf.h -- routes the forward model's tanhf() to the runtime's edgec_mpc_tanhf().
 *
 * `edgec mpc build` compiles every source with `-include edgec_mpc_tanhf.h`: <math.h> is read
 * first (its include guard makes the model's own #include <math.h> a no-op), then tanhf names
 * edgec_mpc_tanhf (float-only, one division, max error 1.6 ulp; see edgec_mpc.c), so the host
 * library and the firmware evaluate the same tanh.
 */
#ifndef EDGEC_MPC_TANHF_H
#define EDGEC_MPC_TANHF_H

#include <math.h>

float edgec_mpc_tanhf(float x);
#define tanhf(x) edgec_mpc_tanhf(x)

#endif /* EDGEC_MPC_TANHF_H */
