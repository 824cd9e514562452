"""Back-ends emit code from an optimised IR graph; they do not change it."""
