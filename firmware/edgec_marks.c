/* edgec_marks.c -- see edgec_marks.h. noinline + noipa keep each call a real call. */
#include "edgec_marks.h"

__attribute__((noinline, noipa)) void edgec_mark_start(void) { __asm volatile("" ::: "memory"); }

__attribute__((noinline, noipa)) void edgec_mark_stop(void) { __asm volatile("" ::: "memory"); }
