"""Compression in plain torch (no fairseq import): pruning, quantization, byte accounting, packed files."""
