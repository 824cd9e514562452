/*
 * rp2040_boot2.S -- edgec's second stage boot for the RP2040, written from the RP2040 datasheet
 * (bootrom flash boot sequence; XIP_SSI registers). The bootrom copies the first 256 bytes of
 * flash to SRAM at 0x20041f00, checks that the last 4 bytes are the CRC-32 (polynomial
 * 0x04c11db7, initial value 0xffffffff, not reflected, no final XOR) of the first 252, and runs
 * it. This stage sets the flash interface (XIP_SSI) up for the generic serial read command
 * 03h (any SPI NOR flash: 24-bit address, 8-bit instruction, one data line, 32-bit frames)
 * at clk_sys / 4, then starts the program: VTOR = 0x10000100 (the vector table right after
 * these 256 bytes), the main stack pointer and the reset handler taken from that table.
 * Position independent (it runs from SRAM): literals are loaded PC-relative.
 * edgec assembles it, pads it to 252 bytes and appends the CRC (edgec/mcu/rp2040.py).
 */
    .syntax unified
    .cpu cortex-m0plus
    .thumb

    .section .text.edgec_boot2, "ax"
    .global edgec_boot2_entry
    .type edgec_boot2_entry, %function
    .thumb_func
edgec_boot2_entry:
    ldr r3, =0x18000000         /* XIP_SSI base */
    movs r1, #0
    str r1, [r3, #0x08]         /* SSIENR = 0: registers can be written */
    movs r1, #4
    str r1, [r3, #0x14]         /* BAUDR = 4: SCK = clk_sys / 4 */
    ldr r1, =0x001f0300         /* CTRLR0: SPI_FRF standard, DFS_32 = 31 (32-bit frames),
                                   TMOD = 3 (EEPROM read: instruction + address, then data) */
    str r1, [r3, #0x00]
    movs r1, #0
    str r1, [r3, #0x04]         /* CTRLR1: NDF = 0, one data frame per read */
    ldr r1, =0x03000218         /* SPI_CTRLR0: XIP_CMD = 0x03, INST_L = 8 bits,
                                   ADDR_L = 6 (24 bits), TRANS_TYPE = 1C1A */
    ldr r2, =0x180000f4         /* SPI_CTRLR0 lies beyond a 5-bit store offset */
    str r1, [r2]
    movs r1, #1
    str r1, [r3, #0x08]         /* SSIENR = 1: flash reads through XIP from here on */

    ldr r0, =0x10000100         /* the program's vector table */
    ldr r1, =0xe000ed08         /* VTOR */
    str r0, [r1]
    ldmia r0, {r0, r1}          /* initial SP, reset handler */
    msr msp, r0
    bx r1

    .ltorg
