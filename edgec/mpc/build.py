"""Controller generation: forward model (+ its generated Jacobian) + runtime + config header.

``build_controller(cfg)`` compiles the forward model named by the config. With
``jacobian = "exact"`` the Jacobian pass adds ``d_y__d_z`` (w.r.t. the current command in NARX
mode; w.r.t. the whole ``[x | u]`` in dynamics mode, i.e. dx'/dx and dx'/du) so that one C call
returns the prediction and its exact derivative. The result writes portable sources
(``write_sources``), builds a host shared library driven through ctypes (``host``), or a
firmware project for a Cortex-M target (``write_firmware_project``).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgec._package import __version__, data_path
from edgec.api import CompiledModel, compile_graph, load_graph
from edgec.backend.host import build_cached_library
from edgec.errors import EdgecError
from edgec.ir import Graph
from edgec.mpc.config import MpcConfig, check_model_shape
from edgec.mpc.reference import Report
from edgec.ops.base import c_float

RUNTIME_FILES = ("edgec_mpc.h", "edgec_mpc.c")
CONFIG_HEADER = "edgec_mpc_config.h"
HOST_FLAGS = ("-O2", "-std=c99", "-fPIC", "-shared", "-Wall", "-Wextra")
#: the firmware's forward model calls edgec's table tanhf (backend/c_math.py, <= 1.44 ulp;
#: newlib's goes through expm1f): every firmware source is compiled with ``-include`` of this
#: header (see it); so is the host library built ``like_board``
#: host flags that make the host library compute what FPU Cortex-M firmware computes: the
#: firmware is built with -ffp-contract=fast (multiply-adds fused into VFMA, and the dense
#: kernel's assembly uses VFMA); -mfma lets x86-64 fuse them too (other hosts fuse natively)
FMA_HOST_FLAGS = (
    "-ffp-contract=fast", *(("-mfma",) if platform.machine() in ("x86_64", "AMD64") else ())
)


def runtime_dir() -> Path:
    return data_path("firmware/mpc/edgec_mpc.c").parent


# -- the forward model ---------------------------------------------------------------------
def _import_attr(cfg: MpcConfig) -> Any:
    assert cfg.model_module is not None
    mod_name, _, attr = cfg.model_module.partition(":")
    if mod_name.endswith(".py"):  # a file: "model.py:fn" (relative to the config) or absolute
        local = cfg.base_dir / mod_name
        if not local.is_file():
            raise EdgecError(f"{cfg.source}: model module file {local} not found")
    else:
        local = cfg.base_dir.joinpath(*mod_name.split(".")).with_suffix(".py")
    try:
        if local.is_file():
            key = "edgec_mpc_user_" + hashlib.sha256(str(local).encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(key, local)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[key] = mod
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except EdgecError:
        raise
    except Exception as exc:
        raise EdgecError(
            f"{cfg.source}: cannot import model module '{mod_name}' "
            f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})"
        ) from None
    if not hasattr(mod, attr):
        raise EdgecError(f"{cfg.source}: module '{mod_name}' has no attribute '{attr}'")
    obj = getattr(mod, attr)
    if not hasattr(obj, "named_modules") and callable(obj):
        obj = obj()
    if not hasattr(obj, "named_modules"):
        raise EdgecError(
            f"{cfg.source}: '{cfg.model_module}' is a {type(obj).__name__}, not a torch "
            f"nn.Module (or a callable returning one)"
        )
    return obj


def load_forward_graph(cfg: MpcConfig, module: Any = None) -> Graph:
    """The forward model as IR; ``module`` (an nn.Module) overrides the config's model."""
    if module is None and cfg.model_file is not None:
        path = Path(cfg.model_file)
        path = path if path.is_absolute() else cfg.base_dir / path
        if not path.is_file():
            raise EdgecError(f"{cfg.source}: model file {path} not found")
        g = load_graph(str(path), name=f"{cfg.name}_model")
    else:
        import torch

        obj = module if module is not None else _import_attr(cfg)
        shape = cfg.example_input or (1, cfg.model_inputs)
        try:
            with torch.no_grad():
                obj.eval()(torch.zeros(shape))
        except Exception as exc:
            raise EdgecError(
                f"{cfg.source}: the model cannot take an input of shape {list(shape)}: the "
                f"mapping needs {cfg.describe_mapping()} "
                f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})"
            ) from None
        g = load_graph(obj, name=f"{cfg.name}_model", example_inputs=(torch.zeros(shape),))
    plain_in = [i for i in g.inputs if all(i != s for s, _ in g.state)]
    plain_out = [o for o in g.outputs if all(o != s for _, s in g.state)]
    if g.state or len(plain_in) != 1 or len(plain_out) != 1:
        raise EdgecError(
            f"{cfg.source}: the forward model must be stateless with one input and one output "
            f"(it has inputs {plain_in}, outputs {plain_out}"
            f"{', recurrent state' if g.state else ''})"
        )
    check_model_shape(cfg, g.shape(plain_in[0]), g.shape(plain_out[0]))
    return g


def compile_forward_model(cfg: MpcConfig, module: Any = None) -> CompiledModel:
    from edgec.passes.jacobian import add_jacobian

    g = load_forward_graph(cfg, module)
    if cfg.jacobian == "exact":
        g = add_jacobian(g, g.inputs[0], list(range(cfg.jacobian_columns)))
    return compile_graph(g, name=f"{cfg.name}_model")


# -- the config header ---------------------------------------------------------------------
def _floats(v: np.ndarray) -> str:
    return "{" + ", ".join(c_float(float(x)) for x in np.asarray(v).reshape(-1)) + "}"


def config_header(cfg: MpcConfig, cm: CompiledModel) -> str:
    model = cm.name
    nj = cfg.jacobian_columns
    lines = [
        f"/* {CONFIG_HEADER} -- generated by edgec {__version__} from {Path(cfg.source).name}.",
        " * Do not edit: `edgec mpc build` rewrites it. */",
        "#ifndef EDGEC_MPC_CONFIG_H",
        "#define EDGEC_MPC_CONFIG_H",
        "",
        f'#include "{model}.h"',
        "",
        f'#define EDGEC_MPC_NAME "{cfg.name}"',
        f"#define EDGEC_MPC_HORIZON_MODE {int(cfg.horizon_mode)}",
        f"#define EDGEC_MPC_NU {cfg.commands} /* commands */",
        f"#define EDGEC_MPC_NY {cfg.outputs} /* tracked outputs */",
        f"#define EDGEC_MPC_NS {cfg.sensors} /* sensor signals */",
        f"#define EDGEC_MPC_LU {cfg.command_lags} /* past commands in the model input */",
        f"#define EDGEC_MPC_LY {cfg.output_lags} /* measured outputs in the model input */",
        f"#define EDGEC_MPC_NX {cfg.states} /* states (dynamics mode) */",
        f"#define EDGEC_MPC_HORIZON {cfg.horizon} /* horizon */",
        f"#define EDGEC_MPC_NZ {cfg.model_inputs} /* model inputs */",
        f"#define EDGEC_MPC_NOUT {cfg.model_outputs} /* model outputs */",
        f"#define EDGEC_MPC_NJ {nj} /* Jacobian columns: the first NJ model inputs */",
        f"#define EDGEC_MPC_NEWTON {int(cfg.newton)}",
        f"#define EDGEC_MPC_JACOBIAN_EXACT {int(cfg.jacobian == 'exact')}",
        f"#define EDGEC_MPC_MAX_ITER {cfg.max_iterations}",
        f"#define EDGEC_MPC_TOL {c_float(cfg.tolerance)}",
        f"#define EDGEC_MPC_STEP_TOL {c_float(cfg.step_tolerance)}",
        f"#define EDGEC_MPC_DAMPING {c_float(cfg.damping)}",
        f"#define EDGEC_MPC_FD_STEP {c_float(cfg.fd_step)}",
        f"#define EDGEC_MPC_RATE_HZ {c_float(cfg.rate_hz)}",
        "",
        "/* the compiled forward model: z -> prediction (and d prediction / d z[0..NJ-1]) */",
    ]
    # the model runs in the controller's own arena (edgec_mpc_t.model_arena): reentrant
    macro = model.upper()
    ports = cm.port_macros
    lines.append(f"#define EDGEC_MPC_MODEL_ARENA_BYTES {macro}_ARENA_BYTES")
    # the model's port sizes, checked against the mapping at compile time (edgec_mpc.c)
    for what, port in zip(("IN", "OUT", "JAC"), ports, strict=False):
        lines.append(f"#define EDGEC_MPC_MODEL_{what}_SIZE {macro}_{port}_SIZE")
    if cfg.jacobian == "exact":
        lines.append("#define EDGEC_MPC_MODEL_JAC(arena, z, y, j) "
                     f"((void){model}_run_arena((arena), (z), (y), (j)))")
    else:
        lines.append("#define EDGEC_MPC_MODEL(arena, z, y) "
                     f"((void){model}_run_arena((arena), (z), (y)))")
    lines += [
        "",
        "#ifdef EDGEC_MPC_IMPLEMENTATION",
        "#ifndef EDGEC_MPC_DATA /* empty in C; __constant__ in a CUDA build (edgec_mpc.h) */",
        "#define EDGEC_MPC_DATA",
        "#endif",
    ]
    per_command = (("u_min", cfg.u_min), ("u_max", cfg.u_max), ("du_max", cfg.du_max),
                   ("u_init", cfg.u_init), ("du_weight", cfg.du_weight))
    lines += [f"static EDGEC_MPC_DATA const float edgec_mpc_{n}[{cfg.commands}] = {_floats(v)};"
              for n, v in per_command]
    if cfg.horizon_mode:
        idx = ", ".join(str(i) for i in cfg.track)
        lines += [
            f"static EDGEC_MPC_DATA const float edgec_mpc_q[{cfg.outputs}] = {_floats(cfg.q)};",
            f"static EDGEC_MPC_DATA const int edgec_mpc_out_index[{cfg.outputs}] = {{{idx}}};",
        ]
    lines += ["#endif", "", "#endif /* EDGEC_MPC_CONFIG_H */", ""]
    return "\n".join(lines)


# -- host execution ------------------------------------------------------------------------
class _CReport(ctypes.Structure):
    _fields_ = [
        ("iterations", ctypes.c_uint),
        ("evaluations", ctypes.c_uint),
        ("residual", ctypes.c_float),
        ("cost", ctypes.c_float),
        ("flags", ctypes.c_uint),
    ]


_FP = ctypes.POINTER(ctypes.c_float)


class HostController:
    """The generated controller as a host shared library: ``step(y_ref, measurement)``."""

    def __init__(self, cfg: MpcConfig, lib_path: Path):
        self.cfg = cfg
        self.path = lib_path
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.edgec_mpc_sizeof.restype = ctypes.c_size_t
        self.buf = ctypes.create_string_buffer(int(self.lib.edgec_mpc_sizeof()))
        self.lib.edgec_mpc_init.argtypes = [ctypes.c_void_p]
        self.lib.edgec_mpc_prime.argtypes = [ctypes.c_void_p, _FP]
        self.lib.edgec_mpc_step.argtypes = [ctypes.c_void_p, _FP, _FP, _FP]
        self.lib.edgec_mpc_step.restype = ctypes.c_uint
        self.lib.edgec_mpc_last_report.argtypes = [ctypes.c_void_p]
        self.lib.edgec_mpc_last_report.restype = ctypes.POINTER(_CReport)
        self.lib.edgec_mpc_model_input.argtypes = [ctypes.c_void_p, _FP, _FP]
        self.reset()

    @staticmethod
    def _arr(v: Any, n: int, what: str) -> np.ndarray:
        a = np.ascontiguousarray(np.asarray(v, np.float32).reshape(-1))
        if a.size != n:
            raise ValueError(f"{what}: expected {n} values, got {a.size}")
        return a

    def reset(self) -> None:
        self.lib.edgec_mpc_init(self.buf)

    def prime(self, measurement: Any) -> None:
        m = self._arr(measurement, self.cfg.measurement_size, "measurement")
        self.lib.edgec_mpc_prime(self.buf, m.ctypes.data_as(_FP))

    def step(self, y_ref: Any, measurement: Any) -> np.ndarray:
        r = self._arr(y_ref, self.cfg.reference_size, "y_ref")
        m = self._arr(measurement, self.cfg.measurement_size, "measurement")
        u = np.zeros(self.cfg.commands, np.float32)
        self.lib.edgec_mpc_step(
            self.buf, r.ctypes.data_as(_FP), m.ctypes.data_as(_FP), u.ctypes.data_as(_FP)
        )
        return u

    @property
    def report(self) -> Report:
        c = self.lib.edgec_mpc_last_report(self.buf).contents
        return Report(c.iterations, c.evaluations, float(c.residual), float(c.cost), c.flags)

    def model_input(self, u: Any) -> np.ndarray:
        uu = self._arr(u, self.cfg.commands, "u")
        z = np.zeros(self.cfg.model_inputs, np.float32)
        self.lib.edgec_mpc_model_input(self.buf, uu.ctypes.data_as(_FP), z.ctypes.data_as(_FP))
        return z


@dataclass
class Controller:
    cfg: MpcConfig
    model: CompiledModel

    @property
    def header(self) -> str:
        return config_header(self.cfg, self.model)

    def write_sources(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Model .h/.c, edgec_mpc.h/.c and edgec_mpc_config.h: add the .c files to a build."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = self.model.write(d)
        for f in RUNTIME_FILES:
            shutil.copyfile(runtime_dir() / f, d / f)
            paths.append(d / f)
        (d / CONFIG_HEADER).write_text(self.header)
        paths.append(d / CONFIG_HEADER)
        return paths

    def c_sources(self) -> list[str]:
        return [f"{self.model.name}.c", "edgec_mpc.c"]

    def build_host_library(
        self, extra_flags: tuple[str, ...] = (), like_board: bool = False
    ) -> Path:
        """The controller as a host shared library. ``like_board``: built as the FPU firmware
        computes (fused multiply-adds) for comparisons with the board. The forward model's tanh
        is edgec's own (backend/c_math.py) on the host and the board alike."""
        flags = HOST_FLAGS + (FMA_HOST_FLAGS if like_board else ()) + tuple(extra_flags)
        files = {
            f"{self.model.name}.h": self.model.c_header,
            f"{self.model.name}.c": self.model.c_source,
            CONFIG_HEADER: self.header,
        }
        for f in RUNTIME_FILES:
            files[f] = (runtime_dir() / f).read_text()
        return build_cached_library(
            f"mpc-{self.cfg.name}", files, self.c_sources(), flags,
            f"the controller '{self.cfg.name}'",
        )

    def host(self, like_board: bool = False) -> HostController:
        return HostController(self.cfg, self.build_host_library(like_board=like_board))


def build_controller(cfg: MpcConfig, module: Any = None) -> Controller:
    return Controller(cfg, compile_forward_model(cfg, module))


# -- firmware project ----------------------------------------------------------------------
_MAIN = """\
/*
 * main.c -- generated by edgec {version}: the MPC controller '{name}' replaying {n} recorded
 * ticks (reference, measurement): {what}.
 * It prints each tick's command as IEEE-754 bit patterns
 * ("y <tick> 0: <hex> ...") and its report ("r <tick>: <iterations> <evaluations> <flags>").
 * Each edgec_mpc_step() is bracketed by edgec_mark_start()/stop() so an instruction counter
 * can measure one control tick. On a board, replace the replay by
 * your sensor read / actuator write at {rate} Hz: edgec_mpc_step(&ctrl, ref, meas, u).
 */
#include "edgec_io.h"
#include "edgec_marks.h"
#include "edgec_mpc.h"

#define N_TICKS {n}u

static const float ref_data[N_TICKS][EDGEC_MPC_REF_SIZE] = {{
{refs}
}};
static const float meas_data[N_TICKS][EDGEC_MPC_MEAS_SIZE] = {{
{meas}
}};

static edgec_mpc_t ctrl;

/* "r <tick>: <iterations> <evaluations> <flags>" */
static void print_report(unsigned k, const edgec_mpc_report_t *rep)
{{
    edgec_puts("r ");
    edgec_put_u32(k);
    edgec_puts(": ");
    edgec_put_u32(rep->iterations);
    edgec_putc(' ');
    edgec_put_u32(rep->evaluations);
    edgec_putc(' ');
    edgec_put_u32(rep->flags);
    edgec_putc('\\n');
}}

int main(void)
{{
    float u[EDGEC_MPC_NU];
    unsigned k;
    edgec_mpc_init(&ctrl);
    edgec_mpc_prime(&ctrl, meas_data[0]);
    for (k = 0u; k < N_TICKS; ++k) {{
        edgec_mark_start();
        (void)edgec_mpc_step(&ctrl, ref_data[k], meas_data[k], u);
        edgec_mark_stop();
        edgec_print_floats(k, 0u, u, EDGEC_MPC_NU);
        print_report(k, edgec_mpc_last_report(&ctrl));
    }}
    return 0;
}}
"""


def _rows(a: np.ndarray) -> str:
    return ",\n".join("    {" + ", ".join(c_float(float(v)) for v in row) + "}" for row in a)


def replay_ticks(cfg: MpcConfig, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A default replay: a small ramp of the reference, measurements at zero."""
    ramp = 0.05 * np.arange(1, n + 1, dtype=np.float64) / n
    refs = np.repeat(ramp[:, None], cfg.reference_size, axis=1)
    meas = np.zeros((n, cfg.measurement_size))
    return refs, meas


def write_firmware_project(
    ctrl: Controller,
    target_name: str | None,
    out_dir: str | os.PathLike[str],
    ticks: tuple[np.ndarray, np.ndarray] | None = None,
    what: str = "a small ramp of the reference with the measurement held at 0",
) -> Path:
    """A Cortex-M project (edgec.mcu.project's startup, linker script and Makefile) whose main()
    runs the controller over recorded ticks (``what`` says where they come from, for main.c's
    comment). Returns the project directory."""
    from edgec.mcu.project import write_project
    from edgec.mcu.targets import load_target

    target = load_target(target_name)
    refs, meas = ticks if ticks is not None else replay_ticks(ctrl.cfg)
    refs = np.asarray(refs, np.float64).reshape(len(refs), -1)
    meas = np.asarray(meas, np.float64).reshape(len(meas), -1)
    if refs.shape[1] != ctrl.cfg.reference_size or meas.shape[1] != ctrl.cfg.measurement_size:
        raise EdgecError(
            f"replay ticks: references need {ctrl.cfg.reference_size} and measurements "
            f"{ctrl.cfg.measurement_size} values per tick"
        )
    d, sources = write_project(ctrl.model, target, out_dir)
    ctrl.write_sources(d)
    (d / "main.c").write_text(
        _MAIN.format(
            version=__version__, name=ctrl.cfg.name, n=len(refs), rate=f"{ctrl.cfg.rate_hz:g}",
            refs=_rows(refs), meas=_rows(meas), what=what,
        )
    )
    old = " ".join(sources)
    new = " ".join([*sources, "edgec_mpc.c"])
    edits = {"Makefile": ((old, new),), "CMakeLists.txt": ((old, new),)}
    for build_file, pairs in edits.items():
        path = d / build_file
        if path.is_file():
            text = path.read_text()
            for a, b in pairs:
                if a not in text:
                    raise EdgecError(f"{path}: unexpected layout ('{a}' not found)")
                text = text.replace(a, b, 1)
            path.write_text(text)
    return d
