"""The QEMU instruction counter, the cycle tables, the size report and ``edgec profile``.

The plugin's own tests run a hand-written assembly firmware (startup, a loop of known length, a
straight-line block of every instruction class) so every expected number is derived by hand
from the source below, independent of the C compiler.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgec.errors import EdgecError
from edgec.mcu import profile as prof
from edgec.mcu.cycle_tables import CLASSES, EVENTS, TABLES, table_for
from edgec.mcu.elf import read_elf
from edgec.mcu.toolchain import have_tool

needs_qemu = pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm",
)

LINKER_SCRIPT = """\
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
         RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 4M }
SECTIONS {
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) } > FLASH
  .data : { *(.data*) } > RAM AT> FLASH
  .bss (NOLOAD) : { *(.bss*) } > RAM
}
"""

#: ``region`` runs loop(ITERS) between the markers REPS times, then ``mix_region`` once.
#: Per loop region: start's BX (1) + MOVS r0 (1) + BL loop (1) + MOVS r1 (1) + 3 * ITERS
#: + BX (1) + BL stop (1) = 6 + 3 * ITERS instructions.
FIRMWARE_S = r"""
    .syntax unified
    .thumb
    .section .vectors, "a"
    .word 0x20010000
    .word reset
    .text
    .thumb_func
reset:
    ldr r0, =0xE000ED88          /* CPACR: enable CP10/CP11 */
    ldr r1, [r0]
    orr r1, r1, #(0xF << 20)
    str r1, [r0]
    dsb
    isb
    ldr r4, =REPS
1:  bl region
    subs r4, #1
    bne 1b
    bl mix_region
    movs r0, #0x18               /* semihosting SYS_EXIT, ADP_Stopped_ApplicationExit */
    ldr r1, =0x20026
    bkpt 0xab
2:  b 2b

    .thumb_func
region:
    push {r4, lr}
    bl edgec_mark_start
    movs r0, #ITERS
    bl loop
    bl edgec_mark_stop
    pop {r4, pc}

    .thumb_func
loop:
    movs r1, #0
3:  adds r1, #1
    cmp r1, r0
    bne 3b
    bx lr

    .thumb_func
mix_region:
    push {r4-r7, lr}
    bl edgec_mark_start
    bl mix
    bl edgec_mark_stop
    pop {r4-r7, pc}

    .thumb_func
mix:
    push {r4-r6, lr}             /* stm 4 */
    ldr r0, =buf                 /* load */
    ldr r1, [r0]                 /* load, paired */
    ldrb r2, [r0, #1]            /* load, paired */
    str r1, [r0, #4]             /* store, paired */
    ldr.w r3, [r0, #8]           /* load, paired */
    strh.w r3, [r0, #12]         /* store, paired */
    ldrd r2, r3, [r0]            /* ldm 2 */
    strd r2, r3, [r0, #16]       /* stm 2 */
    ldmia r0, {r1-r3}            /* ldm 3 */
    stmia.w r0, {r1-r3, r5}      /* stm 4 */
    movs r1, #3                  /* alu */
    movs r2, #5                  /* alu */
    muls r1, r2, r1              /* mul */
    mul r3, r1, r2               /* mul */
    mla r3, r1, r2, r3           /* mla */
    mls r3, r1, r2, r3           /* mla */
    smlabb r3, r1, r2, r3        /* mla */
    smulbb r3, r1, r2            /* mul */
    umull r4, r5, r1, r2         /* mull */
    smlal r4, r5, r1, r2         /* mull */
    sdiv r3, r3, r2              /* div */
    udiv r3, r3, r2              /* div */
    vldr s0, [r0]                /* vload */
    vldmia r0, {s1-s4}           /* vldm 4 */
    vadd.f32 s5, s0, s1          /* fadd */
    vsub.f32 s5, s5, s1          /* fadd */
    vmul.f32 s6, s0, s1          /* fmul */
    vnmul.f32 s6, s0, s1         /* fmul */
    vmla.f32 s6, s0, s1          /* fmla */
    vnmls.f32 s6, s0, s1         /* fmla */
    vfma.f32 s6, s0, s1          /* fma */
    vfms.f32 s6, s0, s1          /* fma */
    vfnma.f32 s6, s0, s1         /* fma */
    vmov.f32 s7, #1.0            /* fother */
    vdiv.f32 s6, s6, s7          /* fdiv */
    vabs.f32 s6, s6              /* fother */
    vsqrt.f32 s6, s6             /* fsqrt */
    vcvt.s32.f32 s8, s6          /* fother */
    vcmp.f32 s6, #0.0            /* fother */
    vmrs APSR_nzcv, fpscr        /* fmov */
    vmov r1, s6                  /* fmov */
    vmov s9, r1                  /* fmov */
    vstr s6, [r0, #20]           /* vstore */
    vpush {s16-s17}              /* vstm 2 */
    vpop {s16-s17}               /* vldm 2 */
    vstmia r0, {s0-s2}           /* vstm 3 */
    cmp r1, r1                   /* alu */
    it eq                        /* it */
    moveq r1, #1                 /* alu */
    cbz r1, 4f                   /* branch, not taken (r1 == 1) */
    cmp r1, #1                   /* alu */
    beq.w 5f                     /* branch, taken (immediate) */
4:  nop                          /* skipped */
5:  lsl r1, r1, r2               /* alu */
    nop                          /* system */
    pop {r4-r6, pc}              /* ldm 4, taken (loaded target) */

    .thumb_func
    .global edgec_mark_start
edgec_mark_start:
    bx lr
    .thumb_func
    .global edgec_mark_stop
edgec_mark_stop:
    bx lr
    .ltorg
    .data
    .word 0x12345678
    .bss
    .align 3
buf: .space 64
"""

#: the mix region: start's BX, BL mix, the block above, BL stop
MIX_CLASSES = {
    "alu": 6, "it": 1, "branch": 3, "call": 2, "mul": 3, "mla": 3, "mull": 2, "div": 2,
    "load": 4, "store": 2, "ldm": 3, "stm": 3, "vload": 1, "vstore": 1, "vldm": 2, "vstm": 2,
    "fadd": 2, "fmul": 2, "fmla": 2, "fma": 3, "fdiv": 1, "fsqrt": 1, "fmov": 3, "fother": 4,
    "system": 1,
}  # fmt: skip
MIX_EVENTS = {
    "ldm_words": 9, "stm_words": 10, "vldm_words": 6, "vstm_words": 5, "taken_imm": 3,
    "taken_reg": 1, "taken_load": 1, "not_taken": 1, "ldst_paired": 5,
}  # fmt: skip


def loop_insns(iters: int) -> int:
    return 6 + 3 * iters


def build_asm_firmware(tmp: Path, reps: int, iters: int) -> Path:
    (tmp / "link.ld").write_text(LINKER_SCRIPT)
    src = tmp / "fw.S"
    src.write_text(FIRMWARE_S)
    elf = tmp / f"fw_{reps}_{iters}.elf"
    subprocess.run(
        ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
         "-mfpu=fpv4-sp-d16", "-nostdlib", "-T", str(tmp / "link.ld"), f"-DREPS={reps}",
         f"-DITERS={iters}", str(src), "-o", str(elf)],
        check=True, capture_output=True,
    )  # fmt: skip
    return elf


# -- the plugin on hand-written firmware -----------------------------------------------------------


@pytest.mark.qemu
@needs_qemu
def test_known_loop_gives_known_count(tmp_path: Path) -> None:
    elf = build_asm_firmware(tmp_path, reps=3, iters=100)
    res, proc = prof.count_elf(elf, "mps2-an386", timeout_s=30)
    assert proc.returncode == 0
    assert [r.insns for r in res.regions] == [loop_insns(100)] * 3 + [59]
    loop = res.regions[0]
    assert {k: v for k, v in loop.classes.items() if v} == {"alu": 202, "branch": 102, "call": 2}
    # BL loop, 99 taken BNE, BL stop / BX in start and in loop / the last BNE
    assert {k: v for k, v in loop.events.items() if v} == {
        "taken_imm": 101, "taken_reg": 2, "not_taken": 1,
    }  # fmt: skip
    assert res.total.insns == 3 * loop_insns(100) + 59
    assert not res.unclosed and res.unmatched_stops == 0 and res.nested_starts == 0


@pytest.mark.qemu
@needs_qemu
def test_every_instruction_class_decoded(tmp_path: Path) -> None:
    elf = build_asm_firmware(tmp_path, reps=1, iters=1)
    res, _ = prof.count_elf(elf, "mps2-an386", timeout_s=30)
    mix = res.regions[-1]
    assert mix.insns == sum(MIX_CLASSES.values()) == 59
    assert mix.classes == {c: MIX_CLASSES.get(c, 0) for c in CLASSES}
    assert mix.events == {e: MIX_EVENTS.get(e, 0) for e in EVENTS}


@pytest.mark.qemu
@needs_qemu
def test_same_elf_same_count_and_linear_growth(tmp_path: Path) -> None:
    elf = build_asm_firmware(tmp_path, reps=2, iters=37)
    a, _ = prof.count_elf(elf, "mps2-an386", timeout_s=30)
    b, _ = prof.count_elf(elf, "mps2-an386", timeout_s=30)
    assert a == b
    totals = []
    for reps in (1, 2, 5):
        res, _ = prof.count_elf(build_asm_firmware(tmp_path, reps, 37), "mps2-an386", 30)
        totals.append(res.total.insns - res.regions[-1].insns)  # without the mix region
    assert totals == [r * loop_insns(37) for r in (1, 2, 5)]
    per_iter = []
    for iters in (10, 20, 40):
        res, _ = prof.count_elf(build_asm_firmware(tmp_path, 1, iters), "mps2-an386", 30)
        per_iter.append(res.regions[0].insns)
    assert per_iter == [loop_insns(i) for i in (10, 20, 40)]


@pytest.mark.qemu
@needs_qemu
def test_elf_sizes_agree_with_binutils(tmp_path: Path) -> None:
    elf = build_asm_firmware(tmp_path, reps=1, iters=1)
    rep = prof.size_report(elf, "none", 1 << 22, 1 << 22)
    text, data, bss = _berkeley_size(elf)
    assert rep.flash_total == text + data
    assert rep.ram_total == data + bss == 4 + 64
    assert rep.weights == rep.arena == rep.state == rep.stack == 0
    start, stop = prof.marker_addresses(elf)
    nm = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True).stdout
    addrs = {ln.split()[2]: int(ln.split()[0], 16) for ln in nm.splitlines()}
    assert (start, stop) == (addrs["edgec_mark_start"], addrs["edgec_mark_stop"])


def _berkeley_size(elf: Path) -> tuple[int, int, int]:
    out = subprocess.run(
        ["arm-none-eabi-size", "-B", str(elf)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[1]
    text, data, bss = (int(v) for v in out.split()[:3])
    return text, data, bss


# -- pure-Python parts -----------------------------------------------------------------------------


def test_cycle_tables_cover_every_class_and_core() -> None:
    for table in TABLES.values():
        assert set(table.classes) == set(CLASSES)
        assert set(table.events) == set(EVENTS)
        assert all(v >= 1 for v in table.classes.values())
    assert table_for("cortex-m4f") is TABLES["cortex-m4"]
    assert table_for("Cortex-M0+") is TABLES["cortex-m0plus"]
    with pytest.raises(EdgecError, match="no cycle table"):
        table_for("cortex-a53")


def test_m4_cycles_of_the_mix_block() -> None:
    # Cortex-M4 TRM / FPU table, by hand: 1-cycle classes, then the costlier ones and events
    ones = sum(MIX_CLASSES[c] for c in ("alu", "it", "branch", "call", "mul", "mla", "mull",
                                         "ldm", "stm", "vldm", "vstm", "fadd", "fmul", "fmov",
                                         "fother", "system"))  # fmt: skip
    expected = (
        ones + 2 * 7 + 2 * (4 + 2 + 1 + 1) + 3 * (2 + 3) + 14 * 2
        + (9 + 10 + 6 + 5) + 3 * 1 + 1 * 2 + 1 * 2 - 5
    )  # fmt: skip
    assert TABLES["cortex-m4"].cycles(MIX_CLASSES, MIX_EVENTS) == expected
    # the M0 has no load/store pairing and slower branches
    m0 = TABLES["cortex-m0"].cycles({"branch": 1, "call": 1}, {"taken_imm": 2})
    assert m0 == 1 + 2 + 2 * 2


def test_parse_plugin_output_and_errors() -> None:
    region = {"insns": 5, "classes": {"alu": 5}, "events": {}}
    line = prof.RESULT_PREFIX + json.dumps(
        {"per_region": [region, region], "total": {"insns": 10, "classes": {"alu": 10},
         "events": {}}, "unclosed": 0, "unmatched_stops": 0, "nested_starts": 0}
    )  # fmt: skip
    res = prof.parse_plugin_output("noise\n" + line + "\nmore noise")
    assert [r.insns for r in res.regions] == [5, 5]
    s = prof.summarize_counts(res, TABLES["cortex-m4"])
    assert (s["mean"], s["min"], s["max"], s["cycles"]) == (5, 5, 5, 5)
    with pytest.raises(EdgecError, match="no result"):
        prof.parse_plugin_output("qemu: nothing here")
    empty = prof.parse_plugin_output(line.replace('"per_region": [', '"per_region": [], "x": ['))
    with pytest.raises(EdgecError, match="no inference was measured"):
        prof.summarize_counts(empty, TABLES["cortex-m4"])


def test_deepest_chain_and_stack_usage(tmp_path: Path) -> None:
    su = tmp_path / "m.su"
    su.write_text("m.c:3:6:net_run\t16\tstatic\nm.c:9:13:k0\t40\tstatic\nm.c:20:13:k1\t8\tstatic\n"
                  "m.c:30:13:leaf\t64\tstatic\n")  # fmt: skip
    frames = prof.read_stack_usage([su])
    assert frames == {"net_run": 16, "k0": 40, "k1": 8, "leaf": 64}
    graph = {"net_run": {"k0", "k1"}, "k0": {"expf"}, "k1": {"leaf", "k1"}, "leaf": set()}
    est = prof.deepest_chain("net_run", graph, frames)
    assert est.bytes == 16 + 8 + 64 and est.chain == ["net_run", "k1", "leaf"]
    assert est.unknown == ["expf"]


def test_read_elf_rejects_other_files(tmp_path: Path) -> None:
    p = tmp_path / "x.elf"
    p.write_bytes(b"not an elf at all")
    with pytest.raises(EdgecError, match="not a 32-bit"):
        read_elf(p)


def test_plugin_builds_and_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEC_CACHE", str(tmp_path))
    lib = prof.build_plugin()
    assert lib.is_file() and lib.parent == tmp_path / "plugins"
    mtime = lib.stat().st_mtime_ns
    assert prof.build_plugin() == lib and lib.stat().st_mtime_ns == mtime
    syms = subprocess.run(["nm", "-D", str(lib)], capture_output=True, text=True).stdout
    assert re.search(r" [TD] qemu_plugin_install$", syms, re.M)
    assert re.search(r" [DBR] qemu_plugin_version$", syms, re.M)


# -- edgec profile on generated firmware ----------------------------------------------------------


def _dense_model(n_in: int, n_out: int, state: bool = False):  # noqa: ANN202 - onnx.ModelProto
    from onnx import helper

    from tests.helpers import make_model

    rng = np.random.default_rng(1)
    inits = {
        "w": rng.standard_normal((n_out, n_in)).astype(np.float32),
        "b": rng.standard_normal(n_out).astype(np.float32),
    }
    if not state:
        nodes = [
            helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["y"]),
        ]
        return make_model(nodes, {"x": [1, n_in]}, {"y": [1, n_out]}, inits)
    inits["u"] = (0.1 * rng.standard_normal((n_out, n_out))).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["a"], transB=1),
        helper.make_node("Gemm", ["h", "u"], ["r"], transB=1),
        helper.make_node("Add", ["a", "r"], ["s"]),
        helper.make_node("Tanh", ["s"], ["hn"]),
    ]
    return make_model(nodes, {"x": [1, n_in], "h": [1, n_out]}, {"hn": [1, n_out]}, inits)


@pytest.mark.qemu
@needs_qemu
def test_profile_json_for_an_mlp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    from edgec.cli import main

    path = tmp_path / "mlp.onnx"
    onnx.save(_dense_model(64, 64), path)
    proj = tmp_path / "proj"
    assert main(["profile", str(path), "--target", "cortex-m4f", "--json", "-o", str(proj)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["macs"] == 64 * 64
    n = rep["instructions_per_inference"]
    assert rep["instructions_min"] == rep["instructions_max"] == n
    # the goal for float Dense 64x64 on Cortex-M4F: at most 2.0 instructions per MAC
    assert rep["macs"] < n <= 2.0 * rep["macs"]
    assert rep["instructions_per_mac"] == pytest.approx(n / rep["macs"], abs=1e-4)
    assert n < rep["estimated_cycles"] < 10 * n
    assert rep["macs_per_cycle"] == pytest.approx(rep["macs"] / rep["estimated_cycles"], abs=1e-4)
    assert rep["instruction_classes"]["fma"] == 64 * 64  # -ffp-contract=fast: one VFMA per MAC
    fl, ram = rep["flash"], rep["ram"]
    assert fl["weights"] == 4 * (64 * 64 + 64)
    assert fl["code"] > 0 and fl["other"] >= 0
    assert fl["code"] + fl["weights"] + fl["other"] == fl["total"]
    assert ram["arena"] + ram["state"] + ram["stack"] + ram["other"] == ram["total"]
    text, data, bss = _berkeley_size(proj / "build" / "mlp.elf")
    assert (fl["total"], ram["total"]) == (text + data, data + bss)
    assert fl["percent"] == round(100 * fl["total"] / (4 << 20), 2)
    assert ram["percent"] == round(100 * ram["total"] / (4 << 20), 2)
    assert ram["stack_chain"][:2] == ["main", "mlp_run"] and 0 < ram["stack"] < 4096
    nm = subprocess.run(
        ["arm-none-eabi-nm", "-S", str(proj / "build" / "mlp.elf")], capture_output=True, text=True
    ).stdout
    weight_bytes = sum(
        int(ln.split()[1], 16) for ln in nm.splitlines() if re.search(r" [rR] w\d+_", ln)
    )
    assert weight_bytes == fl["weights"]


@pytest.mark.qemu
@needs_qemu
def test_model_count_repeatable_and_linear(tmp_path: Path) -> None:
    import edgec
    from edgec.mcu import project as firmware
    from edgec.mcu.targets import load_target

    cm = edgec.compile(_dense_model(17, 7), name="d")
    tgt = load_target("cortex-m4f")
    per_run = []
    for repeat in (1, 2, 3):
        build = firmware.build_firmware(cm, tgt, tmp_path / f"r{repeat}", repeat=repeat)
        res, proc = prof.count_elf(build.elf, "mps2-an386", timeout_s=60)
        assert proc.returncode == 0
        per_run.append([r.insns for r in res.regions])
        if repeat == 3:
            again, _ = prof.count_elf(build.elf, "mps2-an386", timeout_s=60)
            assert again == res
    one = per_run[0][0]
    assert per_run == [[one], [one] * 2, [one] * 3]


@pytest.mark.qemu
@needs_qemu
def test_stateful_model_state_and_m0_table(tmp_path: Path) -> None:
    import edgec
    from edgec.mcu.profile import profile

    cm = edgec.compile(_dense_model(5, 8, state=True), name="rnn", state=[("h", "hn")])
    rep = profile(cm, "cortex-m0", repeat=2)
    assert rep.size.state == cm.report()["state_bytes"] > 0
    assert rep.core == "cortex-m0" and rep.cycle_source.startswith("Cortex-M0 TRM")
    # soft float: no FP instruction, and several instructions per MAC
    assert not any(rep.classes[c] for c in ("fma", "fadd", "fmul", "vldm", "vload"))
    assert rep.instructions_per_inference > 5 * rep.macs
    assert rep.estimated_cycles > rep.instructions_per_inference


def test_profile_needs_an_emulated_core(tmp_path: Path) -> None:
    import edgec
    from edgec.mcu.profile import profile

    (tmp_path / "m55.toml").write_text(
        'core = "cortex-m55"\ncpu_flags = ["-mcpu=cortex-m55", "-mthumb"]\n'
        "flash_origin = 0\nflash_size = 65536\nram_origin = 0x20000000\nram_size = 65536\n"
        "clock_hz = 100000000\n"
    )
    cm = edgec.compile(_dense_model(3, 2), name="d")
    with pytest.raises(EdgecError, match="no emulated twin"):
        profile(cm, str(tmp_path / "m55.toml"))


@pytest.mark.qemu
@needs_qemu
def test_board_profiled_on_its_emulated_twin(capsys: pytest.CaptureFixture[str]) -> None:
    """stm32f446re has no emulator: its Cortex-M4F runs on cortex-m4f's board, the time is at
    the board's 180 MHz and flash/RAM are the board's (512 KB / 128 KB)."""
    import edgec
    from edgec.cli.profile import format_profile
    from edgec.mcu.profile import profile

    cm = edgec.compile(_dense_model(16, 8), name="d")
    board = profile(cm, "stm32f446re", repeat=1)
    twin = profile(cm, "cortex-m4f", repeat=1)
    assert board.instructions_per_inference == twin.instructions_per_inference
    assert board.estimated_cycles == twin.estimated_cycles
    assert board.clock_hz == 180_000_000 and board.emulated_on.startswith("cortex-m4f")
    assert board.size.flash_size == 512 * 1024 and board.size.ram_size == 128 * 1024
    assert board.estimated_time_us == pytest.approx(board.estimated_cycles / 180.0)
    text = format_profile(board, "d.onnx")
    assert "counted on its emulated twin cortex-m4f (QEMU mps2-an386)" in text
    assert "stm32f446re's 180 MHz" in text
