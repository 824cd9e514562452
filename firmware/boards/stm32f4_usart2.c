/*
 * stm32f4_usart2.c -- edgec's output on STM32F4 boards (NUCLEO-F446RE): USART2 on PA2 (AF7),
 * the ST-LINK virtual COM port, 115200 8N1. Written from RM0390 (STM32F446xx reference manual).
 *
 * Minimal clock setup: the core stays on its reset clock, the 16 MHz HSI (no PLL, no flash wait
 * states needed); only the GPIOA and USART2 clocks are enabled. For the full 180 MHz, call your
 * SystemClock_Config() (STM32Cube) from a strong edgec_io_init() of your own.
 * Compiled only without semihosting (make SEMIHOSTING=0, edgec's default for this board).
 */
#include <stdint.h>

#include "edgec_io.h"

#if !EDGEC_SEMIHOSTING

#define REG(addr) (*(volatile uint32_t *)(addr))
#define RCC_AHB1ENR REG(0x40023830u)
#define RCC_APB1ENR REG(0x40023840u)
#define GPIOA_MODER REG(0x40020000u)
#define GPIOA_AFRL REG(0x40020020u)
#define USART2_SR REG(0x40004400u)
#define USART2_DR REG(0x40004404u)
#define USART2_BRR REG(0x40004408u)
#define USART2_CR1 REG(0x4000440Cu)

#define EDGEC_HSI_HZ 16000000u
#define EDGEC_BAUD 115200u

void edgec_io_init(void)
{
    RCC_AHB1ENR |= 1u << 0;  /* GPIOAEN */
    RCC_APB1ENR |= 1u << 17; /* USART2EN */
    (void)RCC_APB1ENR;       /* the clock reaches the peripheral before its first access */
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 4)) | (2u << 4); /* PA2: alternate function */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFu << 8)) | (7u << 8); /* PA2: AF7 = USART2_TX */
    USART2_BRR = (EDGEC_HSI_HZ + (EDGEC_BAUD / 2u)) / EDGEC_BAUD; /* 16x oversampling */
    USART2_CR1 = (1u << 13) | (1u << 3); /* UE, TE */
}

/* one character to the UART, waiting for room */
static void put_raw(char c)
{
    while ((USART2_SR & (1u << 7)) == 0u) { /* TXE */
    }
    USART2_DR = (uint8_t)c;
}

void edgec_putc(char c)
{
    if (c == '\n') {
        put_raw('\r');
    }
    put_raw(c);
}

#endif
