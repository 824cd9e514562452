/*
 * edgec_io.h -- how edgec firmware prints its results.
 *
 * Everything goes through one character sink, edgec_putc(). Its default (weak) definition:
 *   - EDGEC_SEMIHOSTING=1 (the default): newlib's stdout over Arm semihosting. Works on QEMU and
 *     on a real board with a debugger attached (pyOCD/OpenOCD with semihosting enabled). Without
 *     a debugger, a semihosting call stops the core.
 *   - EDGEC_SEMIHOSTING=0 and EDGEC_OUTPUT_ITM=1: ITM stimulus port 0 (SWO; Cortex-M3 and up),
 *     read with e.g. `pyocd swv` or OpenOCD's `itm port 0 on`.
 *   - EDGEC_SEMIHOSTING=0 otherwise: characters are dropped.
 * For a UART, build with SEMIHOSTING=0 and define a strong edgec_putc() (and, if the UART needs
 * setting up, edgec_io_init()) in your own file, e.g.
 *     void edgec_io_init(void) { uart_init(115200); }
 *     void edgec_putc(char c) { while (!(USART2->SR & USART_SR_TXE)) {} USART2->DR = c; }
 */
#ifndef EDGEC_IO_H
#define EDGEC_IO_H

#include <stdint.h>

/* Called once by the startup code before main(); the default does nothing. */
void edgec_io_init(void);
/* Writes one character; weak: replace it for a UART. */
void edgec_putc(char c);

void edgec_puts(const char *s);
void edgec_put_u32(uint32_t v);
/* One result line: "y <sample> <output>: <8-hex-digit IEEE-754 bit pattern> ..." */
void edgec_print_floats(uint32_t sample, uint32_t output, const float *v, uint32_t n);
/* One result line of int8 codes: "y <sample> <output>: <2-hex-digit two's complement byte> ..." */
void edgec_print_int8s(uint32_t sample, uint32_t output, const int8_t *v, uint32_t n);
/* Reports a fault and stops (exit status 70 under semihosting); never returns. */
void edgec_fault(const char *what) __attribute__((noreturn));

#endif /* EDGEC_IO_H */
