"""Decoding: the lean, beam-aware incremental decoder that compressed_translation uses (fairseq glue + torch)."""
