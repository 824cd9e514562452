"""Real boards: firmware prints through the board's UART by default (checked on QEMU's models
of the same peripherals: STM32F4 USART on netduinoplus2, nRF UART on microbit), the generated
Makefile's run/flash targets, and the RP2040's boot2 and UF2 image."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import edgec
from edgec.mcu.elf import read_elf
from edgec.mcu.project import build_firmware
from edgec.mcu.qemu import parse_outputs, run_qemu
from edgec.mcu.rp2040 import crc32_mpeg2
from edgec.mcu.targets import load_target
from edgec.mcu.toolchain import have_tool
from edgec.mcu.uf2 import FAMILY_RP2040, from_uf2, to_uf2
from tests.test_firmware import tanh_mlp

needs_tools = pytest.mark.skipif(
    not (have_tool("arm-none-eabi-gcc") and have_tool("qemu-system-arm")),
    reason="needs arm-none-eabi-gcc and qemu-system-arm (scripts/setup.sh installs them)",
)
X = np.random.default_rng(7).standard_normal((1, 4)).astype(np.float32)


def _serial_run(elf: Path, machine: str, serial: list[str], timeout_s: float = 20) -> str:
    """Run a firmware that prints through a UART (it never exits) until it printed
    EDGEC-END, on the QEMU board ``machine`` with ``serial`` options routing that UART."""
    cmd = [shutil.which("qemu-system-arm") or "qemu-system-arm", "-M", machine, "-nographic",
           "-monitor", "none", *serial, "-kernel", str(elf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    out = b""
    t0 = time.monotonic()
    try:
        assert proc.stdout is not None
        while not (b"EDGEC-END" in out and out.rstrip(b"\r").endswith(b"\n")) and (
            time.monotonic() - t0 < timeout_s
        ):
            chunk = proc.stdout.read1(4096)
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait()
    return out.decode(errors="replace")


def test_crc_and_uf2_round_trip() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 check value
    image = bytes(range(256)) * 3 + b"\x01\x02"
    uf2 = to_uf2(image, 0x10000000)
    assert len(uf2) == 4 * 512
    base, back, family = from_uf2(uf2)
    assert base == 0x10000000 and family == FAMILY_RP2040 and back[: len(image)] == image
    assert back[len(image):] == b"\0" * (4 * 256 - len(image))
    with pytest.raises(ValueError):
        to_uf2(image, 0x10000004)


@pytest.mark.qemu
@needs_tools
def test_stm32f446re_prints_through_usart2(tmp_path: Path) -> None:
    """The board's firmware (no semihosting) on QEMU's STM32F405 board, whose USART2 sits at
    the same address with the same registers: the same outputs as the twin's."""
    m = edgec.compile(tanh_mlp())
    b = build_firmware(m, load_target("stm32f446re"), tmp_path / "fw", [[X]])
    assert "USART2 TX on PA2" in b.io_note
    assert "-DEDGEC_SEMIHOSTING=0" not in (b.project_dir / "Makefile").read_text()
    assert "SEMIHOSTING ?= 0" in (b.project_dir / "Makefile").read_text()
    text = _serial_run(b.elf, "netduinoplus2", ["-serial", "null", "-serial", "stdio"])
    assert "EDGEC-END ok" in text, text
    twin = run_qemu(build_firmware(m, load_target("cortex-m4f"), tmp_path / "twin", [[X]]))
    got = parse_outputs(text, b.outputs, 1)
    assert got[0][0].tobytes() == twin.outputs[0][0].tobytes()


@pytest.mark.qemu
@needs_tools
def test_nrf_uart_driver_on_the_microbit(tmp_path: Path) -> None:
    """nrf_uart0.c (the nRF52840's default output) drives the legacy UART that nRF51 and nRF52
    share: built for a Cortex-M0 board description that uses it, it prints on QEMU's micro:bit."""
    (tmp_path / "m0uart.toml").write_text(
        'core = "cortex-m0"\ncpu_flags = ["-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft"]\n'
        "flash_origin = 0\nflash_size = 262144\nram_origin = 0x20000000\nram_size = 16384\n"
        'clock_hz = 16000000\nstack_bytes = 2048\nheap_bytes = 1024\nboard_io = "nrf_uart0.c"\n'
    )
    m = edgec.compile(tanh_mlp())
    b = build_firmware(m, load_target(str(tmp_path / "m0uart.toml")), tmp_path / "fw", [[X]])
    text = _serial_run(b.elf, "microbit", [])
    assert "EDGEC-END ok" in text, text
    ref = run_qemu(build_firmware(m, load_target("cortex-m0"), tmp_path / "m0", [[X]]))
    assert parse_outputs(text, b.outputs, 1)[0][0].tobytes() == ref.outputs[0][0].tobytes()


@needs_tools
def test_board_makefile_flash_and_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import onnx

    from edgec.cli import main

    onnx.save(tanh_mlp(), tmp_path / "mlp.onnx")
    out = tmp_path / "fw"
    assert main(["build", str(tmp_path / "mlp.onnx"), "--target", "stm32f446re", "-o",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "output: stm32f4_usart2.c: USART2 TX on PA2" in text and "make -C" in text
    dry = subprocess.run(["make", "-n", "-C", str(out), "run", "PORT=/dev/ttyUSB3"],
                         capture_output=True, text=True)
    assert "pyocd flash -t stm32f446retx build/mlp.elf" in dry.stdout
    assert "stty -F /dev/ttyUSB3 115200" in dry.stdout and "cat /dev/ttyUSB3" in dry.stdout
    dry = subprocess.run(["make", "-n", "-C", str(out), "flash", "PROBE=openocd"],
                         capture_output=True, text=True)
    assert "openocd -f interface/stlink.cfg -f target/stm32f4x.cfg" in dry.stdout
    assert main(["build", str(tmp_path / "mlp.onnx"), "--target", "cortex-m4f", "-o",
                 str(tmp_path / "q")]) == 0
    dry = subprocess.run(["make", "-n", "-C", str(tmp_path / "q"), "flash"],
                         capture_output=True, text=True)
    assert "edgec flash build/mlp.elf --probe qemu --target cortex-m4f" in dry.stdout


@needs_tools
def test_rp2040_boot2_and_uf2(tmp_path: Path) -> None:
    m = edgec.compile(tanh_mlp())
    b = build_firmware(m, load_target("rp2040"), tmp_path / "fw", [[X]])
    assert b.uf2 is not None and b.uf2.is_file()
    info = read_elf(b.elf)
    sec = {s.name: s for s in info.sections}
    assert sec[".boot2"].addr == 0x10000000 and sec[".boot2"].size == 256
    assert sec[".isr_vector"].addr == 0x10000100  # where boot2 points VTOR
    image = b.bin.read_bytes()
    boot2 = image[:256]
    assert int.from_bytes(boot2[252:], "little") == crc32_mpeg2(boot2[:252])
    # the vector table: initial SP at the end of RAM, a Thumb reset handler in flash
    sp, reset = int.from_bytes(image[256:260], "little"), int.from_bytes(image[260:264], "little")
    assert sp == 0x20000000 + 270336 and reset & 1 and 0x10000100 < reset < 0x10200000
    base, flash, family = from_uf2(b.uf2.read_bytes())
    assert (base, family) == (0x10000000, FAMILY_RP2040) and flash[: len(image)] == image
    # the project's own Makefile writes the same UF2
    if shutil.which("make"):
        b.uf2.unlink()
        proc = subprocess.run(["make", "-C", str(b.project_dir), "build/model.uf2"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert from_uf2((b.project_dir / "build" / "model.uf2").read_bytes())[1] == flash
