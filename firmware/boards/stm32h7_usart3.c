/*
 * stm32h7_usart3.c -- edgec's output on STM32H7 boards (NUCLEO-H743ZI): USART3 on PD8 (AF7),
 * the ST-LINK virtual COM port, 115200 8N1. Written from RM0433 (STM32H742/743/750/753).
 *
 * Minimal clock setup: the core stays on its reset clock, the 64 MHz HSI (no PLL); USART3's
 * kernel clock is its reset choice, pclk1 = 64 MHz. Only the GPIOD and USART3 clocks are
 * enabled. For 480 MHz, call your SystemClock_Config() from a strong edgec_io_init().
 * Compiled only without semihosting (make SEMIHOSTING=0, edgec's default for this board).
 */
#include <stdint.h>

#include "edgec_io.h"

#if !EDGEC_SEMIHOSTING

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHB4ENR REG(0x580244E0u)
#define RCC_APB1LENR REG(0x580244E8u)
#define GPIOD_MODER REG(0x58020C00u)
#define GPIOD_AFRH REG(0x58020C24u)
#define USART3_CR1 REG(0x40004800u)
#define USART3_BRR REG(0x4000480Cu)
#define USART3_ISR REG(0x4000481Cu)
#define USART3_TDR REG(0x40004828u)

#define EDGEC_PCLK1_HZ 64000000u
#define EDGEC_BAUD 115200u

void edgec_io_init(void)
{
    RCC_AHB4ENR |= 1u << 3;   /* GPIODEN */
    RCC_APB1LENR |= 1u << 18; /* USART3EN */
    (void)RCC_APB1LENR;       /* the clock reaches the peripheral before its first access */
    GPIOD_MODER = (GPIOD_MODER & ~(3u << 16)) | (2u << 16); /* PD8: alternate function */
    GPIOD_AFRH = (GPIOD_AFRH & ~0xFu) | 7u;                 /* PD8: AF7 = USART3_TX */
    USART3_BRR = (EDGEC_PCLK1_HZ + EDGEC_BAUD / 2u) / EDGEC_BAUD; /* 16x oversampling */
    USART3_CR1 = (1u << 3) | (1u << 0); /* TE, UE */
}

/* one character to the UART, waiting for room */
static void put_raw(char c)
{
    while ((USART3_ISR & (1u << 7)) == 0u) { /* TXE (TXFNF) */
    }
    USART3_TDR = (uint8_t)c;
}

void edgec_putc(char c)
{
    if (c == '\n') {
        put_raw('\r');
    }
    put_raw(c);
}

#endif
