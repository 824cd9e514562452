/*
 * nrf_uart0.c -- edgec's output on nRF51/nRF52 boards (nRF52840-DK): the UART0 peripheral
 * (legacy UART, same registers on nRF51 and nRF52) on P0.06 TX, the J-Link virtual COM port,
 * 115200 8N1. Written from the nRF52840 Product Specification.
 *
 * Minimal clock setup: the 64 MHz crystal oscillator (HFXO) is started for an accurate baud
 * rate (the wait is bounded, so a board without the crystal still prints on the internal
 * oscillator); the core runs at 64 MHz either way.
 * Compiled only without semihosting (make SEMIHOSTING=0, edgec's default for this board).
 */
#include <stdint.h>

#include "edgec_io.h"

#if !EDGEC_SEMIHOSTING

#define REG(addr) (*(volatile uint32_t *)(addr))
#define CLOCK_TASKS_HFCLKSTART REG(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG(0x40000100u)
#define UART0_TASKS_STARTTX REG(0x40002008u)
#define UART0_EVENTS_TXDRDY REG(0x4000211Cu)
#define UART0_ENABLE REG(0x40002500u)
#define UART0_PSELTXD REG(0x4000250Cu)
#define UART0_TXD REG(0x4000251Cu)
#define UART0_BAUDRATE REG(0x40002524u)
#define UART0_CONFIG REG(0x4000256Cu)

#ifndef EDGEC_UART_TX_PIN
#define EDGEC_UART_TX_PIN 6u
#endif

void edgec_io_init(void)
{
    CLOCK_EVENTS_HFCLKSTARTED = 0u;
    CLOCK_TASKS_HFCLKSTART = 1u;
    for (uint32_t n = 0u; n < 200000u && CLOCK_EVENTS_HFCLKSTARTED == 0u; ++n) {
    }
    UART0_PSELTXD = EDGEC_UART_TX_PIN;
    UART0_BAUDRATE = 0x01D7E000u; /* 115200 */
    UART0_CONFIG = 0u;            /* no parity, no flow control */
    UART0_ENABLE = 4u;
    UART0_EVENTS_TXDRDY = 0u;
    UART0_TASKS_STARTTX = 1u;
}

/* one character to the UART, waiting for room */
static void put_raw(char c)
{
    UART0_TXD = (uint8_t)c;
    while (UART0_EVENTS_TXDRDY == 0u) {
    }
    UART0_EVENTS_TXDRDY = 0u;
}

void edgec_putc(char c)
{
    if (c == '\n') {
        put_raw('\r');
    }
    put_raw(c);
}

#endif
