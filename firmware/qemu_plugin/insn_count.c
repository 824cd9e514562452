/*
 * edgec instruction counter: a QEMU TCG plugin (plugin API version 1, QEMU 7.2 and later 7.x/8.x).
 *
 * Counts the guest instructions executed between the entry of edgec_mark_start() and the entry of
 * edgec_mark_stop() (their addresses come as plugin arguments), per marked region ("inference")
 * and in total, and sorts each counted instruction into a cost class decoded from its Thumb /
 * Thumb-2 encoding, so that a per-core cost table can turn the counts into estimated cycles.
 *
 * Arguments (comma-separated key=value, as QEMU passes them):
 *   start=0xADDR   entry address of edgec_mark_start (Thumb bit ignored)
 *   stop=0xADDR    entry address of edgec_mark_stop
 *   out=PATH       optional: also write the result line to this file
 *
 * Result: one line "edgec-insn-count {json}" through qemu_plugin_outs (needs -d plugin) at exit.
 *
 * A region counts the instructions whose execution starts while the region is open: from the first
 * instruction of edgec_mark_start (inclusive) to the first instruction of edgec_mark_stop
 * (exclusive). Every instruction gets a callback before it executes; the callback sees the
 * instruction's static class (decoded once, at translation) and, for the instruction before it, the
 * address that actually followed, which tells a taken branch from a fall-through.
 *
 * No qemu-plugin.h is installed with Debian's QEMU: the few declarations used are written below.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the part of the QEMU plugin API (version 1) this plugin uses ---------------------------- */
#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);

EXPORT int qemu_plugin_version = 1;
EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv);

/* ---- instruction classes ------------------------------------------------------------------- */
/* Base classes: every instruction has exactly one. Keep CLASS_NAMES in the same order. */
enum {
    C_ALU,     /* data processing, moves, shifts, compares, extends, bit ops */
    C_IT,      /* IT (may fold into the previous instruction on M3/M4) */
    C_BRANCH,  /* B, B<cond>, CBZ/CBNZ, BX, BLX reg, MOV/ADD pc, TBB/TBH */
    C_CALL,    /* BL (immediate call) */
    C_MUL,     /* 32-bit result multiply: MUL(S), SMULxy, SMUAD, SMMUL, ... */
    C_MLA,     /* 32-bit multiply-accumulate: MLA, MLS, SMLAxy, SMLAD, SMMLA, ... */
    C_MULL,    /* 64-bit result: UMULL, SMULL, UMLAL, SMLAL, SMLALD, ... */
    C_DIV,     /* SDIV, UDIV */
    C_LOAD,    /* single load LDR/LDRB/LDRH/LDRSB/LDRSH (any addressing), LDREX, PLD */
    C_STORE,   /* single store STR/STRB/STRH, STREX */
    C_LDM,     /* LDM, POP, LDRD (words counted in W_LDM) */
    C_STM,     /* STM, PUSH, STRD (words counted in W_STM) */
    C_VLOAD,   /* VLDR */
    C_VSTORE,  /* VSTR */
    C_VLDM,    /* VLDM, VPOP (words counted in W_VLDM) */
    C_VSTM,    /* VSTM, VPUSH (words counted in W_VSTM) */
    C_FADD,    /* VADD, VSUB */
    C_FMUL,    /* VMUL, VNMUL */
    C_FMLA,    /* VMLA, VMLS, VNMLA, VNMLS (chained multiply-accumulate) */
    C_FMA,     /* VFMA, VFMS, VFNMA, VFNMS (fused) */
    C_FDIV,    /* VDIV */
    C_FSQRT,   /* VSQRT */
    C_FMOV,    /* VMOV between core and FP registers, VMRS, VMSR */
    C_FOTHER,  /* other FP data processing: VMOV imm/reg, VABS, VNEG, VCMP, VCVT, VSEL, VMAXNM */
    C_SYSTEM,  /* MSR, MRS, CPS, barriers, hints (NOP, WFI), SVC, BKPT, UDF, coprocessor */
    N_CLASSES
};
/* Events counted alongside the classes. Keep EVENT_NAMES in the same order. */
enum {
    W_LDM,          /* words moved by C_LDM instructions */
    W_STM,          /* words moved by C_STM instructions */
    W_VLDM,         /* words moved by C_VLDM instructions */
    W_VSTM,         /* words moved by C_VSTM instructions */
    E_TAKEN_IMM,    /* taken branches to an immediate target (B, B<cond>, CBZ, BL) */
    E_TAKEN_REG,    /* taken branches to a register target (BX, BLX, MOV pc, ADD pc) */
    E_TAKEN_LOAD,   /* taken branches to a loaded target (POP {pc}, LDM {pc}, LDR pc, TBB) */
    E_NOT_TAKEN,    /* branches that fell through */
    E_LDST_PAIRED,  /* single load/store right after a single load/store (pipelined on M3/M4) */
    N_EVENTS
};

static const char *const CLASS_NAMES[N_CLASSES] = {
    "alu", "it", "branch", "call", "mul", "mla", "mull", "div", "load", "store", "ldm", "stm",
    "vload", "vstore", "vldm", "vstm", "fadd", "fmul", "fmla", "fma", "fdiv", "fsqrt", "fmov",
    "fother", "system",
};
static const char *const EVENT_NAMES[N_EVENTS] = {
    "ldm_words", "stm_words", "vldm_words", "vstm_words",
    "taken_imm", "taken_reg", "taken_load", "not_taken", "ldst_paired",
};

enum { BR_NONE, BR_IMM, BR_REG, BR_LOAD };

typedef struct {
    uint32_t vaddr;
    uint8_t size;
    uint8_t cls;
    uint8_t branch;  /* BR_*: the instruction may change the PC */
    uint8_t paired;  /* single load/store right after one (same translation block) */
    uint8_t words;   /* words moved by LDM/STM/VLDM/VSTM/LDRD/STRD */
    uint8_t marker;  /* 1: start marker entry, 2: stop marker entry */
} InsnInfo;

typedef struct {
    uint64_t insns;
    uint64_t cls[N_CLASSES];
    uint64_t ev[N_EVENTS];
} Counts;

/* ---- Thumb / Thumb-2 decoding ------------------------------------------------------------------ */
static int popcount16(uint32_t v)
{
    return __builtin_popcount(v & 0xFFFFu);
}

static void decode_vfp(uint32_t hw1, uint32_t hw2, InsnInfo *ii)
{
    ii->cls = C_FOTHER;
    if ((hw1 & 0xFE00) == 0xEC00) {
        /* extension register load/store, 64-bit transfers */
        uint32_t p = (hw1 >> 8) & 1, w = (hw1 >> 5) & 1, l = (hw1 >> 4) & 1;
        if ((hw1 & 0xFFE0) == 0xEC40) {
            ii->cls = C_FMOV; /* VMOV two core registers <-> two S / one D */
        } else if (p == 1 && w == 0) {
            ii->cls = l ? C_VLOAD : C_VSTORE;
        } else {
            uint32_t imm8 = hw2 & 0xFF;
            ii->cls = l ? C_VLDM : C_VSTM;
            ii->words = (uint8_t)(((hw2 >> 8) & 1) ? (imm8 & ~1u) : imm8);
        }
        return;
    }
    if ((hw1 & 0xFF00) != 0xEE00) {
        return; /* T2 space (0xFE..): VSEL, VMAXNM, VRINT, VCVTA... */
    }
    if (hw2 & 0x10) {
        ii->cls = C_FMOV; /* VMOV core <-> S, VMOV scalar, VMRS, VMSR */
        return;
    }
    uint32_t opc1 = ((hw1 >> 5) & 4) | ((hw1 >> 4) & 3); /* bits 23, 21, 20 */
    uint32_t opc2 = hw1 & 0xF;
    uint32_t opc3 = (hw2 >> 6) & 3;
    switch (opc1) {
    case 0: /* VMLA, VMLS */
    case 1: /* VNMLA, VNMLS */
        ii->cls = C_FMLA;
        break;
    case 2: /* VMUL, VNMUL */
        ii->cls = C_FMUL;
        break;
    case 3: /* VADD, VSUB */
        ii->cls = C_FADD;
        break;
    case 4: /* VDIV */
        ii->cls = C_FDIV;
        break;
    case 5: /* VFNMA, VFNMS */
    case 6: /* VFMA, VFMS */
        ii->cls = C_FMA;
        break;
    default: /* 7: VMOV imm/reg, VABS, VNEG, VSQRT, VCMP, VCVT */
        ii->cls = (opc2 == 1 && opc3 == 3) ? C_FSQRT : C_FOTHER;
        break;
    }
}

static void decode32(uint32_t hw1, uint32_t hw2, InsnInfo *ii)
{
    uint32_t op1 = (hw1 >> 11) & 3;
    ii->cls = C_ALU;
    if (op1 == 1) {
        if ((hw1 & 0xFE40) == 0xE800) { /* LDM / STM (incl. PUSH.W / POP.W) */
            bool load = (hw1 >> 4) & 1;
            ii->cls = load ? C_LDM : C_STM;
            ii->words = (uint8_t)popcount16(hw2);
            if (load && (hw2 & 0x8000)) {
                ii->branch = BR_LOAD;
            }
        } else if ((hw1 & 0xFE40) == 0xE840) { /* dual, exclusive, table branch */
            if ((hw1 & 0xFFF0) == 0xE8D0 && (hw2 & 0xFFE0) == 0xF000) {
                ii->cls = C_BRANCH; /* TBB / TBH */
                ii->branch = BR_LOAD;
            } else if ((hw1 & 0xFFE0) == 0xE840) {
                ii->cls = (hw1 & 0x10) ? C_LOAD : C_STORE; /* LDREX / STREX */
            } else if ((hw1 & 0xFFF0) == 0xE8C0 || (hw1 & 0xFFF0) == 0xE8D0) {
                ii->cls = (hw1 & 0x10) ? C_LOAD : C_STORE; /* byte/half exclusives */
            } else {
                ii->cls = (hw1 & 0x10) ? C_LDM : C_STM; /* LDRD / STRD */
                ii->words = 2;
            }
        } else if ((hw1 & 0xEC00) == 0xEC00) { /* coprocessor space */
            uint32_t coproc = (hw2 >> 8) & 0xF;
            if (coproc == 10 || coproc == 11) {
                decode_vfp(hw1, hw2, ii);
            } else {
                ii->cls = C_SYSTEM;
            }
        }
        /* else: data processing (shifted register) */
        return;
    }
    if (op1 == 2) {
        if (!(hw2 & 0x8000)) {
            return; /* data processing, immediate */
        }
        uint32_t k = hw2 & 0x5000;
        if (k == 0x0000) { /* B<cond>.W, or misc control when cond is 111x */
            if (((hw1 >> 7) & 7) == 7) {
                ii->cls = C_SYSTEM;
            } else {
                ii->cls = C_BRANCH;
                ii->branch = BR_IMM;
            }
        } else if (k == 0x1000) { /* B.W */
            ii->cls = C_BRANCH;
            ii->branch = BR_IMM;
        } else { /* BL (BLX imm does not exist on M profile) */
            ii->cls = C_CALL;
            ii->branch = BR_IMM;
        }
        return;
    }
    /* op1 == 3 */
    if ((hw1 & 0xFE00) == 0xF800) { /* load/store single */
        bool load = (hw1 >> 4) & 1;
        ii->cls = load ? C_LOAD : C_STORE;
        if (load && ((hw2 >> 12) & 0xF) == 15 && ((hw1 >> 5) & 3) == 2) {
            ii->branch = BR_LOAD; /* LDR pc, ... */
        }
    } else if ((hw1 & 0xFF00) == 0xFA00) {
        ii->cls = C_ALU; /* data processing (register): shifts, extends, SIMD add/sub, REV... */
    } else if ((hw1 & 0xFF80) == 0xFB00) { /* multiply, multiply-accumulate, USAD8 */
        uint32_t op = (hw1 >> 4) & 7, ra = (hw2 >> 12) & 0xF;
        if (op == 7) {
            ii->cls = ra == 15 ? C_ALU : C_MLA; /* USAD8 / USADA8 */
        } else if (op == 0 && ((hw2 >> 4) & 3) == 1) {
            ii->cls = C_MLA; /* MLS */
        } else {
            ii->cls = ra == 15 ? C_MUL : C_MLA;
        }
    } else if ((hw1 & 0xFF80) == 0xFB80) { /* long multiply, divide */
        uint32_t op = (hw1 >> 4) & 7, op2 = (hw2 >> 4) & 0xF;
        ii->cls = ((op == 1 || op == 3) && op2 == 0xF) ? C_DIV : C_MULL;
    } else if ((hw1 & 0xEC00) == 0xEC00) {
        uint32_t coproc = (hw2 >> 8) & 0xF;
        if (coproc == 10 || coproc == 11) {
            decode_vfp(hw1, hw2, ii);
        } else {
            ii->cls = C_SYSTEM;
        }
    }
}

static void decode16(uint32_t hw, InsnInfo *ii)
{
    ii->cls = C_ALU;
    switch (hw >> 12) {
    case 0x4:
        if ((hw & 0xF800) == 0x4800) {
            ii->cls = C_LOAD; /* LDR literal */
        } else if ((hw & 0xFC00) == 0x4400) { /* special data processing, BX, BLX */
            uint32_t op = (hw >> 8) & 3;
            uint32_t rd = (hw & 7) | ((hw >> 4) & 8);
            if (op == 3) {
                ii->cls = C_BRANCH;
                ii->branch = BR_REG;
            } else if (rd == 15 && op != 1) { /* ADD pc / MOV pc (CMP does not write) */
                ii->cls = C_BRANCH;
                ii->branch = BR_REG;
            }
        } else if ((hw & 0xFFC0) == 0x4340) {
            ii->cls = C_MUL; /* MULS */
        }
        break;
    case 0x5: { /* load/store register offset */
        uint32_t opb = (hw >> 9) & 7;
        ii->cls = opb <= 2 ? C_STORE : C_LOAD;
        break;
    }
    case 0x6: case 0x7: case 0x8: case 0x9: /* load/store immediate, SP-relative */
        ii->cls = (hw & 0x0800) ? C_LOAD : C_STORE;
        break;
    case 0xB:
        if ((hw & 0xFE00) == 0xB400) {
            ii->cls = C_STM; /* PUSH */
            ii->words = (uint8_t)popcount16(hw & 0x1FF);
        } else if ((hw & 0xFE00) == 0xBC00) {
            ii->cls = C_LDM; /* POP */
            ii->words = (uint8_t)popcount16(hw & 0x1FF);
            if (hw & 0x100) {
                ii->branch = BR_LOAD;
            }
        } else if ((hw & 0xF500) == 0xB100) {
            ii->cls = C_BRANCH; /* CBZ / CBNZ */
            ii->branch = BR_IMM;
        } else if ((hw & 0xFF00) == 0xBF00) {
            ii->cls = (hw & 0xF) ? C_IT : C_SYSTEM; /* IT, or a hint (NOP, WFI, ...) */
        } else if ((hw & 0xFF00) == 0xBE00 || (hw & 0xFFE8) == 0xB660) {
            ii->cls = C_SYSTEM; /* BKPT, CPS */
        }
        break;
    case 0xC: /* LDM / STM */
        ii->cls = (hw & 0x0800) ? C_LDM : C_STM;
        ii->words = (uint8_t)popcount16(hw & 0xFF);
        break;
    case 0xD:
        if (((hw >> 8) & 0xF) >= 0xE) {
            ii->cls = C_SYSTEM; /* UDF, SVC */
        } else {
            ii->cls = C_BRANCH;
            ii->branch = BR_IMM;
        }
        break;
    case 0xE: /* 0xE000..0xE7FF: B (the 32-bit prefixes never reach here) */
        ii->cls = C_BRANCH;
        ii->branch = BR_IMM;
        break;
    default:
        break;
    }
}

static bool is_single_ldst(const InsnInfo *ii)
{
    return ii->cls == C_LOAD || ii->cls == C_STORE;
}

/* ---- run-time state ------------------------------------------------------------------------------ */
static uint32_t start_addr, stop_addr;
static bool have_start, have_stop;
static const char *out_path;

static bool active;
static Counts cur;
static Counts *regions;
static size_t n_regions, cap_regions;
static uint64_t unmatched_stops, nested_starts;

static bool pending;            /* the previous counted instruction may have branched */
static uint32_t pending_next;   /* its fall-through address */
static uint8_t pending_kind;    /* BR_IMM, BR_REG or BR_LOAD */

static void close_region(void)
{
    if (n_regions == cap_regions) {
        size_t cap = cap_regions ? 2 * cap_regions : 16;
        Counts *p = realloc(regions, cap * sizeof *p);
        if (!p) {
            abort();
        }
        regions = p;
        cap_regions = cap;
    }
    regions[n_regions++] = cur;
}

static void on_insn(unsigned int vcpu_index, void *userdata)
{
    const InsnInfo *ii = userdata;
    (void)vcpu_index;
    if (pending) {
        if (ii->vaddr == pending_next) {
            cur.ev[E_NOT_TAKEN]++;
        } else {
            cur.ev[pending_kind == BR_REG    ? E_TAKEN_REG
                   : pending_kind == BR_LOAD ? E_TAKEN_LOAD
                                             : E_TAKEN_IMM]++;
        }
        pending = false;
    }
    if (ii->marker == 1) {
        if (active) {
            nested_starts++;
        } else {
            memset(&cur, 0, sizeof cur);
            active = true;
        }
    } else if (ii->marker == 2) {
        if (active) {
            close_region();
            active = false;
        } else {
            unmatched_stops++;
        }
    }
    if (!active) {
        return;
    }
    cur.insns++;
    cur.cls[ii->cls]++;
    switch (ii->cls) {
    case C_LDM: cur.ev[W_LDM] += ii->words; break;
    case C_STM: cur.ev[W_STM] += ii->words; break;
    case C_VLDM: cur.ev[W_VLDM] += ii->words; break;
    case C_VSTM: cur.ev[W_VSTM] += ii->words; break;
    default: break;
    }
    if (ii->paired) {
        cur.ev[E_LDST_PAIRED]++;
    }
    if (ii->branch != BR_NONE) {
        pending = true;
        pending_next = ii->vaddr + ii->size;
        pending_kind = ii->branch;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    const InsnInfo *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        const uint8_t *b = qemu_plugin_insn_data(insn);
        size_t size = qemu_plugin_insn_size(insn);
        InsnInfo *ii = calloc(1, sizeof *ii); /* lives as long as the translation: never freed */
        if (!ii) {
            abort();
        }
        ii->vaddr = (uint32_t)qemu_plugin_insn_vaddr(insn);
        ii->size = (uint8_t)size;
        uint32_t hw1 = size >= 2 ? (uint32_t)b[0] | ((uint32_t)b[1] << 8) : 0;
        if (size == 4) {
            uint32_t hw2 = (uint32_t)b[2] | ((uint32_t)b[3] << 8);
            decode32(hw1, hw2, ii);
        } else {
            decode16(hw1, ii);
        }
        ii->paired = prev && is_single_ldst(prev) && is_single_ldst(ii) && prev->branch == BR_NONE
                     && ii->branch == BR_NONE;
        if (have_start && ii->vaddr == start_addr) {
            ii->marker = 1;
        } else if (have_stop && ii->vaddr == stop_addr) {
            ii->marker = 2;
        }
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn, QEMU_PLUGIN_CB_NO_REGS, ii);
        prev = ii;
    }
}

/* ---- output ------------------------------------------------------------------------------------- */
typedef struct {
    char *buf;
    size_t len, cap;
} Str;

static void put(Str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(Str *s, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->buf + s->len, s->cap - s->len, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < s->cap - s->len) {
            s->len += (size_t)k;
            return;
        }
        size_t cap = s->cap * 2 + (size_t)(k > 0 ? k : 0) + 256;
        char *p = realloc(s->buf, cap);
        if (!p) {
            abort();
        }
        s->buf = p;
        s->cap = cap;
    }
}

static void put_counts(Str *s, const Counts *c)
{
    put(s, "{\"insns\":%" PRIu64 ",\"classes\":{", c->insns);
    for (int k = 0; k < N_CLASSES; k++) {
        put(s, "%s\"%s\":%" PRIu64, k ? "," : "", CLASS_NAMES[k], c->cls[k]);
    }
    put(s, "},\"events\":{");
    for (int k = 0; k < N_EVENTS; k++) {
        put(s, "%s\"%s\":%" PRIu64, k ? "," : "", EVENT_NAMES[k], c->ev[k]);
    }
    put(s, "}}");
}

static void on_exit_cb(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    Counts total;
    memset(&total, 0, sizeof total);
    for (size_t r = 0; r < n_regions; r++) {
        total.insns += regions[r].insns;
        for (int k = 0; k < N_CLASSES; k++) {
            total.cls[k] += regions[r].cls[k];
        }
        for (int k = 0; k < N_EVENTS; k++) {
            total.ev[k] += regions[r].ev[k];
        }
    }
    Str s = {malloc(1024), 0, 1024};
    if (!s.buf) {
        abort();
    }
    put(&s, "edgec-insn-count {\"format\":1,\"start\":\"0x%08" PRIx32 "\",\"stop\":\"0x%08" PRIx32
            "\",\"regions\":%zu,\"unclosed\":%d,\"unmatched_stops\":%" PRIu64
            ",\"nested_starts\":%" PRIu64 ",\"total\":",
        start_addr, stop_addr, n_regions, active ? 1 : 0, unmatched_stops, nested_starts);
    put_counts(&s, &total);
    put(&s, ",\"per_region\":[");
    for (size_t r = 0; r < n_regions; r++) {
        if (r) {
            put(&s, ",");
        }
        put_counts(&s, &regions[r]);
    }
    put(&s, "]}\n");
    qemu_plugin_outs(s.buf);
    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            fputs(s.buf, f);
            fclose(f);
        }
    }
    free(s.buf);
}

static bool parse_addr(const char *text, uint32_t *addr)
{
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 0);
    if (!end || *end != '\0' || end == text || v > 0xFFFFFFFFull) {
        return false;
    }
    *addr = (uint32_t)v & ~1u; /* function symbols carry the Thumb bit */
    return true;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "start=", 6) == 0) {
            have_start = parse_addr(a + 6, &start_addr);
            if (!have_start) {
                fprintf(stderr, "edgec insn_count: bad start address '%s'\n", a + 6);
                return -1;
            }
        } else if (strncmp(a, "stop=", 5) == 0) {
            have_stop = parse_addr(a + 5, &stop_addr);
            if (!have_stop) {
                fprintf(stderr, "edgec insn_count: bad stop address '%s'\n", a + 5);
                return -1;
            }
        } else if (strncmp(a, "out=", 4) == 0) {
            out_path = strdup(a + 4);
        } else {
            fprintf(stderr, "edgec insn_count: unknown argument '%s' (start=, stop=, out=)\n", a);
            return -1;
        }
    }
    if (!have_start || !have_stop) {
        fprintf(stderr, "edgec insn_count: needs start=0xADDR and stop=0xADDR\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
