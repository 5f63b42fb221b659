"""jvos: video object segmentation in JAX/Flax (OSVOS, OSMN, RVOS, seq2seq, co-attention)."""
