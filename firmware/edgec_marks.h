/*
 * edgec_marks.h -- the two empty functions firmware main() calls immediately before and after
 * each inference. Instruction counters (edgec's QEMU plugin) and debuggers (breakpoints) find
 * them by symbol name and measure exactly the code between them.
 */
#ifndef EDGEC_MARKS_H
#define EDGEC_MARKS_H

void edgec_mark_start(void);
void edgec_mark_stop(void);

#endif /* EDGEC_MARKS_H */
