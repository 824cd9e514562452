"""Per-core cost tables: estimated cycles from the instruction-class counts of the QEMU plugin.

QEMU counts instructions, not cycles. ``firmware/qemu_plugin/insn_count.c`` sorts every counted
instruction into a class (``alu``, ``load``, ``fma``, ...) and counts a few events (words moved by
load/store-multiple, taken and not-taken branches, paired loads/stores). An estimate is then

    cycles = sum(count[class] * cost[class]) + sum(count[event] * cost[event])

with zero-wait-state memory, no interrupts and no bus contention: the best case the core's manual
describes. Numbers and their sources:

* Cortex-M3: Cortex-M3 Technical Reference Manual (Arm DDI 0337), section 3.3.1 "Cortex-M3
  instructions", Table 3-1 and its notes.
* Cortex-M4: Cortex-M4 Technical Reference Manual (Arm 100166 / DDI 0439), section 3.3.1
  "Table of processor instructions" (Table 3-1) and its notes; FPU: section 7.2.3 "FPU
  instruction set", Table 7-1 (cycle counts of the FPv4-SP instructions).
* Cortex-M0 / M0+: Cortex-M0 Technical Reference Manual (Arm DDI 0432), section 3.3 "Instruction
  set summary", Table 3-1; Cortex-M0+ Technical Reference Manual (Arm DDI 0484), section 3.3,
  Table 3-1 (the single-cycle multiplier option: MULS is 32 cycles with the small multiplier).
* Cortex-M33: Arm publishes no per-instruction timing table for it; it has the same three-stage
  in-order pipeline class as the M4, so the M4 table is used (an assumption, not a datasheet).
* Cortex-M7: Arm publishes no per-instruction table either. Simplification: single issue, one
  cycle per instruction (dual issue ignored, so the estimate bounds the real count from above,
  by up to 2x for code that pairs a load with an FP or ALU op), loads/stores from TCM (1 cycle,
  load/store-multiple 64 bits a cycle), FP multiply-add pipelined at one per cycle, a predicted
  taken branch 1 extra cycle, VDIV/VSQRT 14 (single precision).

Ranges in the manuals are replaced by one number: SDIV/UDIV (2 to 12) count 7, the midpoint;
the pipeline refill P (1 to 3) counts 1 after a branch to an immediate and 2 after a branch to a
register (the manuals' "normally" values); IT counts 1 although it can fold to 0 on M3/M4.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: base classes reported by the plugin (one per instruction), in its order
CLASSES: tuple[str, ...] = (
    "alu", "it", "branch", "call", "mul", "mla", "mull", "div", "load", "store", "ldm", "stm",
    "vload", "vstore", "vldm", "vstm", "fadd", "fmul", "fmla", "fma", "fdiv", "fsqrt", "fmov",
    "fother", "system",
)  # fmt: skip
#: events reported next to the classes
EVENTS: tuple[str, ...] = (
    "ldm_words", "stm_words", "vldm_words", "vstm_words", "taken_imm", "taken_reg",
    "taken_load", "not_taken", "ldst_paired",
)  # fmt: skip


@dataclass(frozen=True)
class CycleTable:
    core: str
    source: str
    #: cycles per instruction of each class (the fixed part: "1" of "1 + N", "1" of "1 + P")
    classes: Mapping[str, float]
    #: cycles per event (per word moved for *_words, the refill P for taken branches, ...)
    events: Mapping[str, float]

    def cycles(
        self, classes: Mapping[str, int | float], events: Mapping[str, int | float]
    ) -> float:
        """Estimated cycles for the given class and event counts (unknown names cost 1 / 0)."""
        total = 0.0
        for name, n in classes.items():
            total += n * self.classes.get(name, 1.0)
        for name, n in events.items():
            total += n * self.events.get(name, 0.0)
        return total


def _table(base: Mapping[str, float], **overrides: float) -> dict[str, float]:
    out = dict(base)
    for k, v in overrides.items():
        if k not in out:
            raise KeyError(k)
        out[k] = v
    return out


_ONES = {c: 1.0 for c in CLASSES}
_NO_EVENTS = {e: 0.0 for e in EVENTS}

# -- Cortex-M4 (TRM Table 3-1, FPU Table 7-1) ------------------------------------------------------
M4_CLASSES = _table(
    _ONES,
    # MUL, MLA, MLS, SMULL/UMULL/SMLAL/UMLAL and the DSP multiplies: 1 cycle
    div=7.0,  # SDIV/UDIV: 2 to 12 (early termination): midpoint
    load=2.0,  # LDR: 2 (1 when pipelined after another load/store single: see ldst_paired)
    store=2.0,  # STR: 2 (same note)
    # ldm/stm/vldm/vstm: 1 + N, N in *_words
    vload=2.0,  # VLDR: 2
    vstore=2.0,  # VSTR: 2
    fmla=3.0,  # VMLA/VMLS/VNMLA/VNMLS: 3
    fma=3.0,  # VFMA/VFMS/VFNMA/VFNMS: 3
    fdiv=14.0,  # VDIV.F32: 14
    fsqrt=14.0,  # VSQRT.F32: 14
    # fadd (VADD/VSUB), fmul (VMUL/VNMUL), fmov (VMOV/VMRS/VMSR), fother (VCVT, VCMP, VABS): 1
)
M4_EVENTS = _table(
    _NO_EVENTS,
    ldm_words=1.0,  # the N of 1 + N (LDM, POP, LDRD)
    stm_words=1.0,  # STM, PUSH, STRD
    vldm_words=1.0,  # VLDM, VPOP: 1 + N
    vstm_words=1.0,  # VSTM, VPUSH: 1 + N
    taken_imm=1.0,  # B/BL/CBZ taken: 1 + P, P "normally 1" for an immediate target
    taken_reg=2.0,  # BX/MOV pc: 1 + P, P "normally 2" for a register target
    taken_load=2.0,  # POP {pc}, LDR pc, TBB: (1 + N or 2) + P
    ldst_paired=-1.0,  # "neighboring load and store single instructions can pipeline": 1 cycle
)

# -- Cortex-M3 (TRM Table 3-1): as M4 for the integer pipeline, slower multiplies, no FPU ----------
M3_CLASSES = _table(
    M4_CLASSES,
    mla=2.0,  # MLA/MLS: 2
    mull=4.0,  # SMULL/UMULL: 3 to 5, SMLAL/UMLAL: 4 to 7 (early termination): 4
)
M3_EVENTS = dict(M4_EVENTS)

# -- Cortex-M0 (TRM Table 3-1): two-stage pipeline, no load/store pairing --------------------------
M0_CLASSES = _table(
    _ONES,
    call=2.0,  # BL: 4 = 2 + refill 2
    load=2.0,  # LDR: 2
    store=2.0,  # STR: 2
    system=4.0,  # DMB/DSB/ISB: 4 (MSR/MRS: 4 too; rare in a model)
)
M0_EVENTS = _table(
    _NO_EVENTS,
    ldm_words=1.0,  # LDM/POP: 1 + N
    stm_words=1.0,  # STM/PUSH: 1 + N
    taken_imm=2.0,  # B, B<cond> taken: 3 (1 if not taken)
    taken_reg=2.0,  # BX, BLX: 3
    taken_load=3.0,  # POP {..., pc}: 4 + N
)

# -- Cortex-M0+ (TRM Table 3-1): as M0 with a one-cycle-shorter branch -----------------------------
M0P_CLASSES = _table(M0_CLASSES, system=3.0)  # BL: 3 = 2 + 1; DMB/DSB/ISB: 3
M0P_EVENTS = _table(
    M0_EVENTS,
    taken_imm=1.0,  # B, B<cond> taken: 2
    taken_reg=1.0,  # BX, BLX: 2
    taken_load=2.0,  # POP {..., pc}: 3 + N
)

# -- Cortex-M7: the documented simplification (single issue, TCM, pipelined FPU) -------------------
M7_CLASSES = _table(_ONES, div=7.0, fdiv=14.0, fsqrt=14.0)
M7_EVENTS = _table(
    _NO_EVENTS,
    ldm_words=0.5,  # 64-bit load/store path: two words a cycle
    stm_words=0.5,
    vldm_words=0.5,
    vstm_words=0.5,
    taken_imm=1.0,
    taken_reg=1.0,
    taken_load=1.0,
)

_M4_SRC = "Cortex-M4 TRM (Arm 100166) Table 3-1, FPU Table 7-1"
TABLES: dict[str, CycleTable] = {
    "cortex-m0": CycleTable("cortex-m0", "Cortex-M0 TRM (Arm DDI 0432) Table 3-1",
                            M0_CLASSES, M0_EVENTS),
    "cortex-m0plus": CycleTable("cortex-m0plus", "Cortex-M0+ TRM (Arm DDI 0484) Table 3-1",
                                M0P_CLASSES, M0P_EVENTS),
    "cortex-m3": CycleTable("cortex-m3", "Cortex-M3 TRM (Arm DDI 0337) Table 3-1",
                            M3_CLASSES, M3_EVENTS),
    "cortex-m4": CycleTable("cortex-m4", _M4_SRC, M4_CLASSES, M4_EVENTS),
    "cortex-m33": CycleTable("cortex-m33", "assumed equal to " + _M4_SRC + " (no Arm table)",
                             M4_CLASSES, M4_EVENTS),
    "cortex-m7": CycleTable("cortex-m7", "simplified model: single issue, TCM, pipelined FPU "
                            "(no Arm table; dual issue ignored)", M7_CLASSES, M7_EVENTS),
}  # fmt: skip


def table_for(core: str) -> CycleTable:
    """The cost table of a core name as targets spell it ("cortex-m4", "cortex-m0plus", ...)."""
    key = core.lower().replace("+", "plus")
    if key.endswith("f") and key[:-1] in TABLES:  # "cortex-m4f"
        key = key[:-1]
    try:
        return TABLES[key]
    except KeyError:
        from edgec.errors import EdgecError

        raise EdgecError(
            f"no cycle table for core '{core}' (known: {', '.join(sorted(TABLES))})"
        ) from None
