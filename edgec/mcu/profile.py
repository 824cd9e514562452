"""Measure a model on a Cortex-M target: exact instructions, estimated cycles, flash and RAM.

* Instructions: the firmware (:func:`edgec.mcu.project.build_firmware`) calls ``edgec_mark_start()``
  right before and ``edgec_mark_stop()`` right after each inference; QEMU runs it with edgec's TCG
  plugin (``firmware/qemu_plugin/insn_count.c``, built here with the host C compiler on first use
  and cached by content hash), which counts the instructions executed from the entry of the start
  marker to the entry of the stop marker. A region therefore holds the inference plus a constant
  few instructions of call overhead (the marker's return, argument set-up, the calls themselves).
  QEMU is deterministic: the same ELF gives the same count on every run.
* Cycles: the plugin also sorts every counted instruction into a cost class;
  :mod:`edgec.mcu.cycle_tables` turns the class counts into an estimate for the target's core.
* Flash and RAM: read from the ELF's section headers and symbol table (weights: the model's
  ``static const`` tables ``w<idx>_*``; arena: ``<name>_arena``; state: the firmware's state
  object) and from the ``.su`` files of ``-fstack-usage``: the stack estimate is the deepest call
  chain below ``main`` through ``<name>_run`` / ``<name>_step`` (call edges from the disassembly,
  frame sizes from ``.su``; library functions built without ``-fstack-usage`` count 0 and are
  listed in ``stack_unknown``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgec._package import data_path
from edgec.errors import EdgecError, ToolchainError
from edgec.mcu.cycle_tables import CycleTable, table_for
from edgec.mcu.elf import SHF_EXECINSTR, read_elf

if TYPE_CHECKING:
    from edgec.mcu.model import CompiledLike as CompiledModel
    from edgec.mcu.targets import Target

PLUGIN_CFLAGS = (
    "-shared", "-fPIC", "-O2", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra",
)  # fmt: skip
RESULT_PREFIX = "edgec-insn-count "
MARK_START = "edgec_mark_start"
MARK_STOP = "edgec_mark_stop"
WEIGHT_SYMBOL = re.compile(r"^w\d+_")


# -- the plugin ------------------------------------------------------------------------------------


def plugin_source() -> Path:
    return data_path("firmware/qemu_plugin/insn_count.c")


def cache_root() -> Path:
    return Path(
        os.environ.get("EDGEC_CACHE")
        or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgec")
    )


def build_plugin() -> Path:
    """The instruction-counting plugin as a shared library (built once per source and compiler)."""
    from edgec.backend.host import host_cc

    cc = host_cc()
    src = plugin_source()
    text = src.read_bytes()
    key = hashlib.sha256(b"\0".join([text, cc.encode(), *(f.encode() for f in PLUGIN_CFLAGS)]))
    out_dir = cache_root() / "plugins"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"insn_count-{key.hexdigest()[:20]}.so"
    if lib.is_file():
        return lib
    with tempfile.TemporaryDirectory(prefix="edgec-plugin-") as tmp:
        tmp_lib = Path(tmp) / "insn_count.so"
        proc = subprocess.run(
            [cc, *PLUGIN_CFLAGS, "-o", str(tmp_lib), str(src)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["(no output)"]
            raise ToolchainError(
                "host C compiler failed on the QEMU plugin: "
                + next((ln for ln in lines if "error" in ln), lines[0])
            )
        staged = lib.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(tmp_lib, staged)
        os.replace(staged, lib)
    return lib


# -- plugin results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegionCounts:
    """Instructions, class counts and events of one marked region (one inference)."""

    insns: int
    classes: dict[str, int]
    events: dict[str, int]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RegionCounts:
        return cls(int(d["insns"]), dict(d["classes"]), dict(d["events"]))


@dataclass(frozen=True)
class CountResult:
    regions: list[RegionCounts]
    total: RegionCounts
    unclosed: bool
    unmatched_stops: int
    nested_starts: int


def parse_plugin_output(text: str) -> CountResult:
    """The plugin's result line (``edgec-insn-count {...}``) from QEMU's output or its file."""
    for line in text.splitlines():
        pos = line.find(RESULT_PREFIX)
        if pos >= 0:
            d = json.loads(line[pos + len(RESULT_PREFIX) :])
            return CountResult(
                regions=[RegionCounts.from_json(r) for r in d["per_region"]],
                total=RegionCounts.from_json(d["total"]),
                unclosed=bool(d["unclosed"]),
                unmatched_stops=int(d["unmatched_stops"]),
                nested_starts=int(d["nested_starts"]),
            )
    raise EdgecError("the QEMU instruction-count plugin printed no result (was -d plugin given?)")


def marker_addresses(elf: str | os.PathLike[str]) -> tuple[int, int]:
    """Entry addresses (Thumb bit cleared) of edgec_mark_start and edgec_mark_stop."""
    syms = {s.name: s for s in read_elf(elf).symbols if s.kind == "FUNC"}
    missing = [n for n in (MARK_START, MARK_STOP) if n not in syms]
    if missing:
        raise EdgecError(f"{elf}: no {' / '.join(missing)} symbol: not an edgec firmware ELF")
    return syms[MARK_START].value & ~1, syms[MARK_STOP].value & ~1


def plugin_args(
    elf: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> list[str]:
    start, stop = marker_addresses(elf)
    args = [f"start={start:#x}", f"stop={stop:#x}"]
    if out is not None:
        args.append(f"out={out}")
    return args


def count_elf(
    elf: str | os.PathLike[str], machine: str, timeout_s: float = 60.0
) -> tuple[CountResult, subprocess.CompletedProcess[str]]:
    """Run ``elf`` on QEMU ``machine`` (semihosting) with the plugin; the counts and the process.

    Independent of :mod:`edgec.mcu.project`: any ELF with the two marker functions works.
    """
    from edgec.mcu.toolchain import find_tool

    qemu = find_tool("qemu-system-arm")
    lib = build_plugin()
    with tempfile.TemporaryDirectory(prefix="edgec-count-") as tmp:
        out = Path(tmp) / "counts.json"
        cmd = [
            qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-kernel", str(elf),
            "-plugin", ",".join([str(lib), *plugin_args(elf, out)]), "-d", "plugin",
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise EdgecError(f"{elf}: QEMU did not finish within {timeout_s:g} s") from None
        text = out.read_text() if out.is_file() else proc.stdout + "\n" + proc.stderr
    return parse_plugin_output(text), proc


# -- stack estimate from -fstack-usage -------------------------------------------------------------


def read_stack_usage(files: Iterable[str | os.PathLike[str]]) -> dict[str, int]:
    """Function name → frame bytes from ``.su`` files (largest when a name repeats)."""
    frames: dict[str, int] = {}
    for f in files:
        for line in Path(f).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            fn = parts[0].rsplit(":", 1)[-1].strip()
            try:
                n = int(parts[1])
            except ValueError:
                continue
            frames[fn] = max(frames.get(fn, 0), n)
    return frames


_CALL = re.compile(
    r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{4}\s?){1,2}\s+(bl|blx|b\.w|b)\s+[0-9a-f]+ <([^>+]+)>"
)
_FUNC_HEAD = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")


def call_graph(elf: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Function → functions it calls (BL) or tail-calls (B to another function's entry)."""
    from edgec.mcu.toolchain import find_tool

    objdump = find_tool("arm-none-eabi-objdump")
    proc = subprocess.run([objdump, "-d", str(elf)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"arm-none-eabi-objdump failed on {elf}: {proc.stderr.strip()}")
    graph: dict[str, set[str]] = {}
    cur: str | None = None
    for line in proc.stdout.splitlines():
        m = _FUNC_HEAD.match(line)
        if m:
            cur = m.group(1)
            graph.setdefault(cur, set())
            continue
        m = _CALL.match(line)
        if m and cur is not None and m.group(2) != cur:
            graph[cur].add(m.group(2))
    return graph


@dataclass(frozen=True)
class StackEstimate:
    bytes: int
    chain: list[str]
    unknown: list[str]


def deepest_chain(
    root: str, graph: Mapping[str, set[str]], frames: Mapping[str, int]
) -> StackEstimate:
    """The call chain from ``root`` with the largest sum of frames (cycles cut, unknown = 0)."""
    memo: dict[str, tuple[int, list[str]]] = {}
    unknown: set[str] = set()
    on_path: set[str] = set()

    def visit(fn: str) -> tuple[int, list[str]]:
        if fn in memo:
            return memo[fn]
        if fn in on_path:
            return 0, []
        on_path.add(fn)
        if fn not in frames:
            unknown.add(fn)
        best: tuple[int, list[str]] = (0, [])
        for callee in sorted(graph.get(fn, ())):
            sub = visit(callee)
            if sub[0] > best[0]:
                best = sub
        on_path.discard(fn)
        memo[fn] = (frames.get(fn, 0) + best[0], [fn, *best[1]])
        return memo[fn]

    total, chain = visit(root)
    return StackEstimate(total, chain, sorted(unknown))


# -- the size report -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeReport:
    code: int
    weights: int
    flash_other: int
    flash_total: int
    flash_size: int
    arena: int
    state: int
    stack: int
    ram_other: int
    ram_total: int
    ram_size: int
    stack_reserved: int = 0
    stack_chain: list[str] = field(default_factory=list)
    stack_unknown: list[str] = field(default_factory=list)

    def flash_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "weights": self.weights,
            "other": self.flash_other,
            "total": self.flash_total,
            "available": self.flash_size,
            "percent": _pct(self.flash_total, self.flash_size),
        }

    def ram_json(self) -> dict[str, Any]:
        return {
            "arena": self.arena,
            "state": self.state,
            "stack": self.stack,
            "other": self.ram_other,
            "total": self.ram_total,
            "available": self.ram_size,
            "percent": _pct(self.ram_total, self.ram_size),
            "stack_reserved": self.stack_reserved,
            "stack_chain": list(self.stack_chain),
            "stack_unknown": list(self.stack_unknown),
        }


def _pct(n: int, of: int) -> float:
    return round(100.0 * n / of, 2) if of else 0.0


def size_report(
    elf: str | os.PathLike[str],
    model_name: str,
    flash_size: int,
    ram_size: int,
    su_files: Sequence[str | os.PathLike[str]] = (),
    stack_reserved: int = 0,
) -> SizeReport:
    """Flash split (code / weights / other) and RAM split (arena / state / stack / other).

    Flash total = every allocated section with contents (equal to arm-none-eabi-size's
    text + data); RAM total = every allocated writable or zero-filled section (data + bss,
    including the linker script's heap/stack reserve).
    """
    info = read_elf(elf)
    flash_total = sum(s.size for s in info.sections if s.in_flash)
    ram_total = sum(s.size for s in info.sections if s.in_ram)
    code = sum(s.size for s in info.sections if s.in_flash and s.flags & SHF_EXECINSTR)
    flash_secs = {s.name for s in info.sections if s.in_flash and not s.in_ram}
    ram_secs = {s.name for s in info.sections if s.in_ram}
    weights = sum(
        s.size
        for s in info.symbols
        if s.kind == "OBJECT" and s.section in flash_secs and WEIGHT_SYMBOL.match(s.name)
    )
    ram_objects = [s for s in info.symbols if s.kind == "OBJECT" and s.section in ram_secs]
    arena = sum(s.size for s in ram_objects if s.name == f"{model_name}_arena")
    # the firmware's main.c holds a stateful model's state in `static <name>_state_t state;`
    state = sum(s.size for s in ram_objects if s.name in ("state", f"{model_name}_state"))
    stack = StackEstimate(0, [], [])
    if su_files:
        frames = read_stack_usage(su_files)
        graph = call_graph(elf)
        roots = [f"{model_name}_run", f"{model_name}_step"]
        best = max(
            (deepest_chain(r, graph, frames) for r in roots if r in graph),
            key=lambda e: e.bytes,
            default=StackEstimate(0, [], []),
        )
        main_frame = frames.get("main", 0)
        stack = StackEstimate(best.bytes + main_frame, ["main", *best.chain], best.unknown)
    return SizeReport(
        code=code,
        weights=weights,
        flash_other=flash_total - code - weights,
        flash_total=flash_total,
        flash_size=flash_size,
        arena=arena,
        state=state,
        stack=stack.bytes,
        ram_other=ram_total - arena - state - stack.bytes,
        ram_total=ram_total,
        ram_size=ram_size,
        stack_reserved=stack_reserved,
        stack_chain=stack.chain,
        stack_unknown=stack.unknown,
    )


# -- the profile -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerProfile:
    """One node's share of an inference (a per-layer profiling build: each kernel call
    bracketed by the markers)."""

    index: int
    node: str
    op: str
    instructions: float
    estimated_cycles: int
    macs: int
    #: constant bytes the kernel reads (weights, flash) and activation bytes in + out (RAM)
    weight_bytes: int
    activation_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "node": self.node, "op": self.op,
            "instructions": round(self.instructions, 2),
            "estimated_cycles": self.estimated_cycles, "macs": self.macs,
            "weight_bytes": self.weight_bytes, "activation_bytes": self.activation_bytes,
        }


@dataclass(frozen=True)
class ProfileReport:
    model: str
    target: str
    core: str
    clock_hz: int
    inferences: int
    instructions_per_inference: int
    instructions_min: int
    instructions_max: int
    classes: dict[str, float]
    events: dict[str, float]
    estimated_cycles: int
    cycle_source: str
    macs: int
    size: SizeReport
    elf: str
    #: a board without an emulator: the emulated twin whose run was counted ("" = the target)
    emulated_on: str = ""
    #: per node (``per_layer``): instructions, cycles, MACs, bytes, counted in a second build
    #: with markers around each kernel call (the markers' own cost subtracted); the rest of an
    #: inference (set-up between kernels, output copies, state updates) is ``layer_overhead``,
    #: which can be slightly negative: the compiler schedules a few instructions differently
    #: around the markers
    layers: list[LayerProfile] = field(default_factory=list)
    layer_overhead: float = 0.0

    @property
    def macs_per_cycle(self) -> float:
        return self.macs / self.estimated_cycles if self.estimated_cycles else 0.0

    @property
    def instructions_per_mac(self) -> float:
        return self.instructions_per_inference / self.macs if self.macs else 0.0

    @property
    def estimated_time_us(self) -> float:
        return 1e6 * self.estimated_cycles / self.clock_hz if self.clock_hz else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "core": self.core,
            "clock_hz": self.clock_hz,
            "inferences": self.inferences,
            "instructions_per_inference": self.instructions_per_inference,
            "instructions_min": self.instructions_min,
            "instructions_max": self.instructions_max,
            "instructions_per_mac": round(self.instructions_per_mac, 4),
            "estimated_cycles": self.estimated_cycles,
            "estimated_time_us": round(self.estimated_time_us, 2),
            "cycle_table": self.cycle_source,
            "macs": self.macs,
            "macs_per_cycle": round(self.macs_per_cycle, 4),
            "instruction_classes": {k: v for k, v in self.classes.items() if v},
            "events": {k: v for k, v in self.events.items() if v},
            "flash": self.size.flash_json(),
            "ram": self.size.ram_json(),
            "elf": self.elf,
            "emulated_on": self.emulated_on or None,
            **({"layers": [la.to_json() for la in self.layers],
                "layer_overhead_instructions": round(self.layer_overhead, 2)}
               if self.layers else {}),
        }


def summarize_counts(result: CountResult, table: CycleTable) -> dict[str, Any]:
    """Per-inference instructions (mean, min, max), class/event means and estimated cycles."""
    if not result.regions:
        raise EdgecError(
            "no inference was measured: the firmware never reached edgec_mark_stop "
            "after edgec_mark_start"
        )
    n = len(result.regions)
    insns = [r.insns for r in result.regions]
    classes = {k: v / n for k, v in result.total.classes.items()}
    events = {k: v / n for k, v in result.total.events.items()}
    return {
        "inferences": n,
        "mean": round(sum(insns) / n),
        "min": min(insns),
        "max": max(insns),
        "classes": classes,
        "events": events,
        "cycles": round(table.cycles(classes, events)),
    }


def profile(
    cm: CompiledModel,
    target: Target | str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    repeat: int = 2,
    timeout_s: float = 120.0,
    per_layer: bool = False,
    extra_cflags: Sequence[str] = (),
) -> ProfileReport:
    """Build ``cm`` as firmware for ``target``, run it on QEMU with the counting plugin, measure.

    ``repeat`` inferences run (and are counted) per input; the report gives the mean per inference.
    ``extra_cflags`` go to the compiler (e.g. ``-DEDGEC_NO_DSP`` for the generic int8 kernels).
    """
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.mcu.targets import emulated_twin, load_target

    tgt = target if not isinstance(target, str | None) else load_target(target)
    twin = emulated_twin(tgt)
    if twin is None:
        raise EdgecError(
            f"target '{tgt.name}' has no emulator (qemu_machine) and no emulated twin for its "
            f"core {tgt.core}: instructions cannot be counted"
        )
    table = table_for(tgt.core)
    with tempfile.TemporaryDirectory(prefix="edgec-profile-") as tmp:
        work = Path(out_dir) if out_dir is not None else Path(tmp)
        # the fit and sizes: the board's
        board = build_firmware(cm, tgt, work, repeat=repeat, extra_cflags=extra_cflags)
        build = board
        if twin is not tgt:  # the board's core on its emulated twin: the same instructions
            build = build_firmware(cm, twin, Path(tmp) / "twin", repeat=repeat,
                                   extra_cflags=extra_cflags)
        counts_file = Path(tmp) / "counts.json"
        res = run_qemu(
            build,
            timeout_s=timeout_s,
            plugin_args=[str(build_plugin()), *plugin_args(build.elf, counts_file)],
        )
        text = counts_file.read_text() if counts_file.is_file() else res.stdout
        counts = parse_plugin_output(text)
        layers: list[LayerProfile] = []
        if per_layer:
            layers = _layer_counts(cm, build.target, Path(tmp) / "layers", repeat, table,
                                   timeout_s)
        size = size_report(
            board.elf,
            cm.name,
            tgt.flash_size,
            tgt.ram_size,
            list(board.stack_usage_files),
            stack_reserved=tgt.stack_bytes,
        )
        elf = str(board.elf)
    s = summarize_counts(counts, table)
    return ProfileReport(
        model=cm.name,
        target=tgt.name,
        core=tgt.core,
        clock_hz=tgt.clock_hz,
        inferences=s["inferences"],
        instructions_per_inference=s["mean"],
        instructions_min=s["min"],
        instructions_max=s["max"],
        classes=s["classes"],
        events=s["events"],
        estimated_cycles=s["cycles"],
        cycle_source=table.source,
        macs=int(cm.report().get("macs", 0)),
        size=size,
        elf=elf if out_dir is not None else "",
        emulated_on="" if twin is tgt else f"{twin.name} (QEMU {twin.qemu_machine})",
        layers=layers,
        layer_overhead=s["mean"] - sum(la.instructions for la in layers) if layers else 0.0,
    )


@dataclass
class _MarkedModel:
    """``cm`` with C whose kernels are each bracketed by the markers (per-layer profiling)."""

    base: Any
    cmodel: Any

    @property
    def graph(self) -> Any:
        return self.base.graph

    @property
    def name(self) -> str:
        return str(self.base.name)

    @property
    def is_stateful(self) -> bool:
        return bool(self.base.is_stateful)

    @property
    def output_names(self) -> list[str]:
        return list(self.base.output_names)

    def report(self) -> dict[str, Any]:
        return dict(self.base.report())

    def write(self, directory: str | os.PathLike[str]) -> list[Path]:
        return list(self.cmodel.write(directory))

    def initial_state(self) -> dict[str, Any]:
        return dict(self.base.initial_state())


def _layer_counts(
    cm: CompiledModel, run_target: Target, work: Path, repeat: int, table: CycleTable,
    timeout_s: float,
) -> list[LayerProfile]:
    """Counts per node: the model re-emitted with each kernel call bracketed by the markers,
    main() calling no marker itself, run on ``run_target``'s board."""
    from edgec.backend.c_emit import emit_c
    from edgec.mcu.project import build_firmware
    from edgec.mcu.qemu import run_qemu
    from edgec.ops import get_op

    g = cm.graph
    marked = emit_c(g, cm.name, layer_marks=True)
    nodes: list[int] = list(marked.report["layer_nodes"])
    build = build_firmware(_MarkedModel(cm, marked), run_target, work, repeat=repeat, marks=False)
    counts_file = work / "counts.json"
    res = run_qemu(build, timeout_s=timeout_s,
                   plugin_args=[str(build_plugin()), *plugin_args(build.elf, counts_file)])
    text = counts_file.read_text() if counts_file.is_file() else res.stdout
    regions = parse_plugin_output(text).regions
    if not nodes or len(regions) % len(nodes):
        raise EdgecError(
            f"per-layer profile: {len(regions)} marked regions for {len(nodes)} kernels"
        )
    runs = len(regions) // len(nodes)
    base = regions[0 :: len(nodes)]  # node -1: an empty region, the markers' own cost
    base_insns = sum(r.insns for r in base) / runs
    base_classes = {c: sum(r.classes.get(c, 0) for r in base) / runs for c in base[0].classes}
    out = []
    for k, idx in enumerate(nodes):
        if idx < 0:
            continue
        mine = regions[k :: len(nodes)]
        classes: dict[str, float] = {}
        events: dict[str, float] = {}
        for c, v in base_classes.items():
            classes[c] = -v
        for r in mine:
            for c, v in r.classes.items():
                classes[c] = classes.get(c, 0.0) + v / runs
            for e, v in r.events.items():
                events[e] = events.get(e, 0.0) + v / runs
        node = g.nodes[idx]
        consts = [t for t in node.inputs if t and g.const(t) is not None]
        acts = [t for t in [*node.inputs, *node.outputs] if t and g.const(t) is None]
        out.append(LayerProfile(
            index=idx, node=node.name,
            op=node.op + (f"+{node.attrs['_act'][0]}" if node.attrs.get("_act") else ""),
            instructions=sum(r.insns for r in mine) / runs - base_insns,
            estimated_cycles=round(table.cycles(classes, events)),
            macs=int(get_op(node, g).macs(node, g)),
            weight_bytes=sum(int(g.const(t).nbytes) for t in consts),  # type: ignore[union-attr]
            activation_bytes=sum(4 * g.tensor(t).size for t in acts),
        ))
    return out
