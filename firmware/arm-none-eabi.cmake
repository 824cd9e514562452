# arm-none-eabi.cmake -- CMake toolchain file for edgec firmware projects (Arm GNU toolchain,
# bare metal). Use: cmake -B build -DCMAKE_TOOLCHAIN_FILE=arm-none-eabi.cmake
# Set ARM_TOOLCHAIN_PREFIX (e.g. /opt/arm/bin/arm-none-eabi-) for a toolchain not on PATH.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

if(NOT DEFINED ARM_TOOLCHAIN_PREFIX)
  set(ARM_TOOLCHAIN_PREFIX arm-none-eabi-)
endif()
set(CMAKE_C_COMPILER ${ARM_TOOLCHAIN_PREFIX}gcc)
set(CMAKE_ASM_COMPILER ${ARM_TOOLCHAIN_PREFIX}gcc)
set(CMAKE_OBJCOPY ${ARM_TOOLCHAIN_PREFIX}objcopy CACHE FILEPATH "objcopy")
set(CMAKE_SIZE ${ARM_TOOLCHAIN_PREFIX}size CACHE FILEPATH "size")

# the compiler check cannot link a bare-metal program without a linker script
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
