/*
 * rp2040_uart0.c -- edgec's output on RP2040 boards (Raspberry Pi Pico): UART0 (PL011) on GP0,
 * 115200 8N1. Written from the RP2040 datasheet.
 *
 * Minimal clock setup: the 12 MHz crystal oscillator (XOSC) is started and clk_ref switched to
 * it; clk_sys follows clk_ref (its reset source), so the core runs at 12 MHz (no PLL), and
 * clk_peri (the UART's clock) is enabled from clk_sys. IO_BANK0, PADS_BANK0 and UART0 are taken
 * out of reset. Compiled only without semihosting (edgec's default for this board).
 */
#include <stdint.h>

#include "edgec_io.h"

#if !EDGEC_SEMIHOSTING

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RESETS_RESET_CLR REG(0x4000F000u) /* the atomic-clear alias (+0x3000) */
#define RESETS_RESET_DONE REG(0x4000C008u)
#define XOSC_CTRL REG(0x40024000u)
#define XOSC_STATUS REG(0x40024004u)
#define XOSC_STARTUP REG(0x4002400Cu)
#define CLK_REF_CTRL REG(0x40008030u)
#define CLK_REF_SELECTED REG(0x40008038u)
#define CLK_PERI_CTRL REG(0x40008048u)
#define IO_GPIO0_CTRL REG(0x40014004u)
#define UART0_DR REG(0x40034000u)
#define UART0_FR REG(0x40034018u)
#define UART0_IBRD REG(0x40034024u)
#define UART0_FBRD REG(0x40034028u)
#define UART0_LCR_H REG(0x4003402Cu)
#define UART0_CR REG(0x40034030u)

#define EDGEC_XOSC_HZ 12000000u
#define EDGEC_BAUD 115200u
#define RESET_IO_BANK0 (1u << 5)
#define RESET_PADS_BANK0 (1u << 8)
#define RESET_UART0 (1u << 22)

void edgec_io_init(void)
{
    /* XOSC: 1-15 MHz range, start-up delay in units of 256 cycles (about 1 ms), enable */
    XOSC_CTRL = 0xAA0u;
    XOSC_STARTUP = ((EDGEC_XOSC_HZ / 1000u) + 128u) / 256u;
    XOSC_CTRL = (0xFABu << 12) | 0xAA0u;
    while ((XOSC_STATUS & (1u << 31)) == 0u) { /* STABLE */
    }
    CLK_REF_CTRL = 2u; /* clk_ref from XOSC; clk_sys keeps its reset source, clk_ref */
    while ((CLK_REF_SELECTED & (1u << 2)) == 0u) {
    }
    CLK_PERI_CTRL = 1u << 11; /* ENABLE, AUXSRC = clk_sys */

    const uint32_t blocks = RESET_IO_BANK0 | RESET_PADS_BANK0 | RESET_UART0;
    RESETS_RESET_CLR = blocks;
    while ((RESETS_RESET_DONE & blocks) != blocks) {
    }
    /* divisor in 1/64ths: 4 * clk / baud (12 MHz, 115200: 417 = 6 + 33/64) */
    const uint32_t div64 = ((4u * EDGEC_XOSC_HZ) + (EDGEC_BAUD / 2u)) / EDGEC_BAUD;
    UART0_IBRD = div64 >> 6;
    UART0_FBRD = div64 & 63u;
    UART0_LCR_H = (3u << 5) | (1u << 4); /* 8 bits, FIFOs on (latches the divisor) */
    UART0_CR = (1u << 8) | (1u << 0);    /* TXE, UARTEN */
    IO_GPIO0_CTRL = 2u;                  /* GP0: FUNCSEL UART0 TX */
}

/* one character to the UART, waiting for room */
static void put_raw(char c)
{
    while ((UART0_FR & (1u << 5)) != 0u) { /* TXFF */
    }
    UART0_DR = (uint8_t)c;
}

void edgec_putc(char c)
{
    if (c == '\n') {
        put_raw('\r');
    }
    put_raw(c);
}

#endif
