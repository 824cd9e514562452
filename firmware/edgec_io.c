/* edgec_io.c -- result printing for edgec firmware; see edgec_io.h for the output hook. */
#include "edgec_io.h"

#include <stdlib.h>
#include <string.h>

#ifndef EDGEC_SEMIHOSTING
#define EDGEC_SEMIHOSTING 1
#endif

#if EDGEC_SEMIHOSTING
#include <stdio.h>
#endif

__attribute__((weak)) void edgec_io_init(void) {}

__attribute__((weak)) void edgec_putc(char c)
{
#if EDGEC_SEMIHOSTING
    (void)putchar((unsigned char)c);
#elif defined(EDGEC_OUTPUT_ITM) && EDGEC_OUTPUT_ITM && (__ARM_ARCH >= 7)
    volatile uint32_t *const itm_tcr = (volatile uint32_t *)0xE0000E80u;
    volatile uint32_t *const itm_ter = (volatile uint32_t *)0xE0000E00u;
    volatile uint32_t *const itm_port0 = (volatile uint32_t *)0xE0000000u;
    if (((*itm_tcr & 1u) != 0u) && ((*itm_ter & 1u) != 0u)) { /* ITM on and port 0 enabled by the debugger */
        while (*itm_port0 == 0u) {
        }
        *(volatile uint8_t *)itm_port0 = (uint8_t)c;
    }
#else
    (void)c;
#endif
}

static const char digits[] = "0123456789abcdef";

void edgec_puts(const char *s)
{
    size_t i = 0u;
    while (s[i] != '\0') {
        edgec_putc(s[i]);
        ++i;
    }
}

void edgec_put_u32(uint32_t v)
{
    char buf[11];
    uint32_t rest = v;
    int i = 10;
    buf[i] = '\0';
    do {
        --i;
        buf[i] = digits[rest % 10u];
        rest /= 10u;
    } while (rest != 0u);
    edgec_puts(&buf[i]);
}

static void put_hex32(uint32_t v)
{
    for (uint32_t shift = 0u; shift < 32u; shift += 4u) {
        edgec_putc(digits[(v >> (28u - shift)) & 0xFu]);
    }
}

void edgec_print_floats(uint32_t sample, uint32_t output, const float *v, uint32_t n)
{
    edgec_puts("y ");
    edgec_put_u32(sample);
    edgec_putc(' ');
    edgec_put_u32(output);
    edgec_putc(':');
    for (uint32_t i = 0; i < n; ++i) {
        uint32_t bits;
        (void)memcpy(&bits, &v[i], sizeof bits);
        edgec_putc(' ');
        put_hex32(bits);
    }
    edgec_putc('\n');
}

void edgec_print_int8s(uint32_t sample, uint32_t output, const int8_t *v, uint32_t n)
{
    edgec_puts("y ");
    edgec_put_u32(sample);
    edgec_putc(' ');
    edgec_put_u32(output);
    edgec_putc(':');
    for (uint32_t i = 0; i < n; ++i) {
        const uint8_t byte = (uint8_t)v[i];
        edgec_putc(' ');
        edgec_putc(digits[byte >> 4u]);
        edgec_putc(digits[byte & 0xFu]);
    }
    edgec_putc('\n');
}

void edgec_fault(const char *what)
{
    edgec_puts("\nedgec: fault: ");
    edgec_puts(what);
    edgec_putc('\n');
#if EDGEC_SEMIHOSTING
    (void)fflush(stdout);
    _Exit(70);
#else
    for (;;) {
    }
#endif
}
