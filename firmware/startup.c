/*
 * startup.c -- edgec's Cortex-M startup code, shared by every core (M0/M0+/M3/M4/M7/M33).
 *
 * Reset_Handler enables the FPU (on cores built with one), copies .data from flash, zeroes .bss,
 * sets up newlib's semihosting I/O when EDGEC_SEMIHOSTING is 1, runs constructors, calls main()
 * and passes its return value to exit() (under semihosting, QEMU's exit status).
 * The vector table holds the 16 system exceptions only: edgec's firmware enables no interrupts.
 * Symbols come from the linker script (cortexm.ld): _estack, _sidata, _sdata, _edata, _sbss,
 * _ebss.
 */
#include <stdint.h>
#include <stdlib.h>

#include "edgec_io.h"

#ifndef EDGEC_SEMIHOSTING
#define EDGEC_SEMIHOSTING 1
#endif

extern uint32_t _sidata[], _sdata[], _edata[], _sbss[], _ebss[], _estack[];
extern int main(void);
extern void __libc_init_array(void);
#if EDGEC_SEMIHOSTING
extern void initialise_monitor_handles(void);
#endif

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);

/* -nostartfiles drops crti/crtn: newlib's __libc_init_array/exit still call these. */
void _init(void);
void _fini(void);
void _init(void) {}
void _fini(void) {}

__attribute__((optimize("no-tree-loop-distribute-patterns"))) void Reset_Handler(void)
{
#if defined(__ARM_FP)
    /* CPACR: full access to CP10 and CP11 (the FPU) before any floating-point instruction. */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    const uint32_t *src = _sidata;
    uint32_t *dst = _sdata;
    while (dst < _edata) {
        *dst = *src;
        ++dst;
        ++src;
    }
    dst = _sbss;
    while (dst < _ebss) {
        *dst = 0u;
        ++dst;
    }
#if EDGEC_SEMIHOSTING
    initialise_monitor_handles();
#endif
    edgec_io_init();
    __libc_init_array();
    exit(main());
}

/* Any exception but reset: report it and stop (exit status 70 under semihosting). */
void Default_Handler(void)
{
    edgec_fault("unexpected exception");
}

void HardFault_Handler(void)
{
    edgec_fault("HardFault");
}

typedef void (*edgec_vector_t)(void);

__attribute__((section(".isr_vector"), used)) static const edgec_vector_t edgec_vectors[16] = {
    (edgec_vector_t)(uintptr_t)_estack, /* initial main stack pointer */
    Reset_Handler,
    Default_Handler,   /* NMI */
    HardFault_Handler, /* HardFault */
    Default_Handler,   /* MemManage (M3 and up) */
    Default_Handler,   /* BusFault (M3 and up) */
    Default_Handler,   /* UsageFault (M3 and up) */
    Default_Handler,   /* SecureFault (M33) */
    0,
    0,
    0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
};
