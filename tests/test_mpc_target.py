"""The MPC controller on the emulated Cortex-M4F: the board loop (plant on the host, one tick per
exchange) against the host controller, `edgec profile CONFIG.toml`, the rate and flash goals,
and the runtime's tanhf."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.cli import main as cli_main
from edgec.errors import EdgecError, ToolchainError
from edgec.mcu.targets import load_target
from edgec.mpc.build import build_controller
from edgec.mpc.config import load_config
from edgec.mpc.plants import make_plant
from edgec.mpc.simulate import load_reference, resample, run_mpc
from edgec.mpc.target import (
    BoardController,
    build_mpc_firmware,
    model_loop_ticks,
    profile_controller,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "soft_actuator_mpc"
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="needs qemu-system-arm and arm-none-eabi-gcc",
)
pytestmark = [pytest.mark.qemu, needs_qemu]

#: The board and the host library built `like_board` (fused multiply-adds, the runtime's tanhf)
#: run the same C, but GCC for x86-64 and for Thumb-2 do not contract and schedule every
#: expression alike (and the board's dense kernel is VFMA assembly): per-tick commands agree to
#: a few ulp, not bit for bit. 1e-6 bounds that with margin for commands of size ~1.
COMMAND_TOL = 1e-6


@pytest.fixture(scope="module")
def mlp2(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cfg = load_config(EXAMPLE / "mlp2.toml")
    ctrl = build_controller(cfg)
    fw = build_mpc_firmware(ctrl, "cortex-m4f", tmp_path_factory.mktemp("mlp2") / "fw", link=True)
    return cfg, ctrl, fw


def test_board_loop_matches_host_on_model_ticks(mlp2) -> None:  # noqa: ANN001
    cfg, ctrl, fw = mlp2
    refs, meas = model_loop_ticks(ctrl, 24)
    host = ctrl.host(like_board=True)
    with BoardController(cfg, fw) as board:
        board.reset()
        board.prime(meas[0])
        host.prime(meas[0])
        for k in range(len(refs)):
            u_b = board.step(refs[k], meas[k])
            u_h = host.step(refs[k], meas[k])
            np.testing.assert_allclose(u_b, u_h, rtol=0, atol=COMMAND_TOL)
            assert board.report.iterations == host.report.iterations
            assert board.report.flags == host.report.flags
            assert np.all(u_b >= cfg.u_min) and np.all(u_b <= cfg.u_max)
        # NaN measurement: a flagged fallback on the board too, the command held
        u_held = board.step(refs[-1], np.full(cfg.measurement_size, np.nan))
        assert board.report.flags & 0x4
        np.testing.assert_array_equal(u_held, u_b)
    assert board.proc.returncode == 0


def test_board_closed_loop_soft_actuator_matches_host() -> None:
    """Closed loop with the plant on the host: the board's commands and the host controller's
    (fed the same references and measurements the board saw) agree tick by tick."""
    cfg = load_config(EXAMPLE / "soft_actuator.toml")
    ctrl = build_controller(cfg)
    t, ref = load_reference(EXAMPLE / "soft_path.csv", cfg.outputs)
    ref = resample(t, ref, cfg.dt)[:301]
    plant = make_plant("soft-actuator", cfg.dt)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    class Recording(BoardController):
        def step(self, y_ref, measurement):  # noqa: ANN001, ANN202
            seen.append((np.array(y_ref, np.float32), np.array(measurement, np.float32)))
            return super().step(y_ref, measurement)

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        fw = build_mpc_firmware(ctrl, "cortex-m4f", Path(tmp) / "fw", link=True)
        with Recording(cfg, fw) as board:
            res = run_mpc(cfg, board, plant, ref)
    host = ctrl.host(like_board=True)
    host.reset()
    host.prime(np.concatenate([make_plant("soft-actuator", cfg.dt).output(),
                               np.zeros(cfg.sensors)]))
    u_host = np.array([host.step(r, m) for r, m in seen])
    assert len(u_host) == len(ref) - 1
    diff = np.abs(res.u - u_host).max(axis=1)
    # The soft actuator is under-determined (2 commands, 1 output): the LM system is fixed by the
    # move weight 1e-3, condition number ~1e3, so few-ulp differences of the model become ~1e-5
    # in u (the well-conditioned Newton case above agrees to COMMAND_TOL). Bound: the solver's
    # step tolerance (1e-4), which is also where a flipped stopping test would land.
    assert diff.max() <= cfg.step_tolerance
    assert np.count_nonzero(res.iterations == 0) > 0  # converged ticks exist on both
    err = res.y[:, 0] - ref[1:, 0]
    assert np.sqrt(np.mean(err**2)) < 2e-3  # it tracks (the host loop reaches 5e-4 on 20 s)
    assert not np.any(res.flags & 0x4)


def test_cli_simulate_on_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "short.csv"
    t = np.arange(0.0, 1.0 + 1e-9, 0.01)
    rest = make_plant("soft-actuator", 0.01).output()[0]
    np.savetxt(path, np.stack([t, rest + 0.2 * (1 - np.exp(-5 * t))], 1), delimiter=",",
               header="t,theta", comments="")
    rc = cli_main(["mpc", "simulate", str(EXAMPLE / "soft_actuator.toml"), "--plant",
                   "soft-actuator", "--reference", str(path), "--target", "cortex-m4f",
                   "-o", str(tmp_path / "out"), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["mpc"]["fallbacks"] == 0 and res["mpc"]["rmse"] < res["pid"]["rmse"]
    assert (tmp_path / "out" / "sim.csv").is_file()


def test_board_rejects_bad_requests_and_times_out(mlp2) -> None:  # noqa: ANN001
    cfg, _, fw = mlp2
    with BoardController(cfg, fw, timeout_s=10) as board:
        with pytest.raises(ToolchainError, match="rejected"):
            board._request("s 0000zz00")
    assert board.proc.poll() is not None  # torn down
    with BoardController(cfg, fw, timeout_s=20) as board:
        board.reset()
        board.timeout_s = 0.5
        os.kill(board.proc.pid, signal.SIGSTOP)  # a board that hangs: no answer comes
        with pytest.raises(ToolchainError, match="no answer within 0.5 s"):
            board.step(np.zeros(cfg.reference_size), np.zeros(cfg.measurement_size))
    assert board.proc.poll() is not None


def test_board_loop_needs_a_uart_board(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE / "mlp2.toml")
    with pytest.raises(EdgecError, match="CMSDK UART"):
        build_mpc_firmware(build_controller(cfg), "cortex-m0", tmp_path / "fw", link=True)


def test_profile_json_and_goals(capsys: pytest.CaptureFixture[str]) -> None:
    counts = []
    for _ in range(2):
        assert cli_main(["profile", str(EXAMPLE / "mlp2.toml"), "--target", "cortex-m4f",
                         "--json"]) == 0
        rep = json.loads(capsys.readouterr().out)
        counts.append(rep["instructions_per_tick"])
    for key in ("instructions_per_tick", "estimated_cycles_per_tick", "control_rate_hz",
                "control_rate_hz_at_168mhz", "flash", "ram", "mean_iterations"):
        assert key in rep
    assert counts[0] == counts[1] > 0  # exact: the same ELF counts the same
    assert rep["instructions_min"] <= rep["instructions_per_tick"] <= rep["instructions_max"]
    assert rep["fallbacks"] == 0 and 1.0 <= rep["mean_iterations"] <= 4.0
    assert rep["flash"]["weights"] > 4 * (2 * 32 + 32 * 32 + 32 * 2)
    # the goals (issue 12): >= 4 kHz at 168 MHz, flash under 6.4 % of a 512 KB part; the
    # counts are exact (QEMU plugin), so a lost fusion or an extra model pass fails here
    assert rep["estimated_cycles_per_tick"] <= 42_000
    assert rep["control_rate_hz_at_168mhz"] >= 4000.0
    assert rep["instructions_per_tick"] <= 14_965  # half the 29,931 before issue 12
    assert rep["mean_evaluations"] <= 2.1  # the last tick's final evaluation is reused
    assert rep["flash"]["percent_of_512k"] < 6.4
    assert rep["ram"]["controller_state"] > 0 and rep["ram"]["stack_chain"][:2] == [
        "main", "edgec_mpc_step"]


def test_profile_quotes_the_chosen_targets_clock_and_flash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """stm32f446re (180 MHz, 512 KB, no emulator): counted on its twin, quoted at its clock."""
    assert cli_main(["mpc", "profile", str(EXAMPLE / "mlp2.toml"), "--target",
                     "stm32f446re"]) == 0
    text = capsys.readouterr().out
    assert "counted on its emulated twin cortex-m4f" in text
    assert "at stm32f446re's 180 MHz" in text and "of stm32f446re's 512 KB" in text
    assert "168" not in text
    assert cli_main(["profile", str(EXAMPLE / "mlp2.toml"), "--target", "cortex-m4f",
                     "--json"]) == 0
    m4f = json.loads(capsys.readouterr().out)
    assert cli_main(["profile", str(EXAMPLE / "mlp2.toml"), "--target", "stm32f446re",
                     "--json"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["instructions_per_tick"] == m4f["instructions_per_tick"]
    assert board["control_rate_hz"] == pytest.approx(
        180e6 / board["estimated_cycles_per_tick"], rel=1e-3)
    assert board["flash"]["available"] == 512 * 1024


def test_exact_jacobian_is_cheaper_per_tick_than_fd() -> None:
    cfg = load_config(EXAMPLE / "mlp2.toml")
    exact = profile_controller(build_controller(cfg), "cortex-m4f", n_ticks=8)
    cfg.jacobian = "fd"
    fd = profile_controller(build_controller(cfg), "cortex-m4f", n_ticks=8)
    assert fd.mean_evaluations == 5 * exact.mean_evaluations  # 1 + 2 NJ passes per evaluation
    assert exact.instructions_per_tick < 0.6 * fd.instructions_per_tick


def test_makefile_project_builds_without_libm_tanhf(tmp_path: Path) -> None:
    """The written project builds warning-free and the model's tanh is edgec's own, not
    newlib's (the one the profile measured)."""
    from edgec.mpc.build import write_firmware_project

    ctrl = build_controller(load_config(EXAMPLE / "mlp2.toml"))
    d = write_firmware_project(ctrl, "cortex-m4f", tmp_path / "fw")
    proc = subprocess.run(["make", "-s", "-C", str(d)], capture_output=True, text=True)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    nm = subprocess.run(["arm-none-eabi-nm", str(d / "build" / f"{ctrl.model.name}.elf")],
                        capture_output=True, text=True).stdout
    assert " tanhf" not in nm and "expm1f" not in nm
    assert load_target("cortex-m4f").has_fpu


def test_mpc_build_project_runs_a_closed_loop_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgec mpc build --target` writes a main() replaying a reference tracked with the model as
    the plant (measurements move, not held at 0); `make run` shows the commands and no
    fallbacks."""
    from edgec.mcu.project import Port
    from edgec.mcu.qemu import parse_outputs

    d = tmp_path / "fw"
    assert cli_main(["mpc", "build", str(EXAMPLE / "mlp2.toml"), "--target", "cortex-m4f",
                     "-o", str(d), "--ticks", "16"]) == 0
    assert "closed loop with the controller's own forward model" in capsys.readouterr().out
    main_c = (d / "main.c").read_text()
    meas = main_c[main_c.index("meas_data"):]
    assert "closed loop" in main_c and meas.count("{") > 16
    assert any(tok.strip(" {},\n") not in ("0.0f", "") for tok in meas.split(",")[:40])
    proc = subprocess.run(["make", "-s", "-C", str(d), "run"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    reports = [ln for ln in proc.stdout.splitlines() if ln.startswith("r ")]
    from edgec.mpc.reference import FLAG_CONVERGED, FLAG_FALLBACK

    flags = [int(ln.split()[-1]) for ln in reports]
    assert len(reports) == 16 and all(f & FLAG_CONVERGED and not f & FLAG_FALLBACK
                                      for f in flags)
    ctrl = build_controller(load_config(EXAMPLE / "mlp2.toml"))
    outs = parse_outputs(proc.stdout, [Port("u", "u", (ctrl.cfg.commands,))], 16)
    assert len(outs) == 16 and np.ptp([o[0] for o in outs]) > 0  # the command moves


def test_simulation_plot_has_error_panel_units_and_outside_legends(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgec.mpc.simulate import LoopResult, plot

    t = np.linspace(0, 1, 50)
    ref = np.sin(t)[:, None]
    z = np.zeros(50, np.int64)
    mpc = LoopResult(ref + 0.01, np.ones((50, 2)), z, z, z)
    pid = LoopResult(ref - 0.02, np.zeros((50, 2)), z, z, z)
    figs = []
    real_close = plt.close
    plt.close = lambda fig=None: figs.append(fig)  # type: ignore[assignment]
    try:
        plot(tmp_path / "sim.png", t, ref, mpc, pid, "soft-actuator", "joint angle (rad)",
             "tendon drive (0..1)")
    finally:
        plt.close = real_close
    fig = figs[0]
    ax0, ax1, ax2 = fig.axes
    assert ax0.get_ylabel() == "joint angle (rad)" and ax2.get_ylabel() == "tendon drive (0..1)"
    assert ax1.get_ylabel() == "tracking error (rad)" and ax2.get_xlabel() == "time (s)"
    err = ax1.get_lines()[1].get_ydata()
    np.testing.assert_allclose(err, 0.01)  # MPC's error, not its output
    for ax in fig.axes:  # every legend to the right of its axes, outside the data
        leg = ax.get_legend()
        assert leg is not None and leg.get_bbox_to_anchor().x0 > ax.get_window_extent().x1
    assert (tmp_path / "sim.png").stat().st_size > 10_000
    real_close(fig)
