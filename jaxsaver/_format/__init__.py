"""Pure encodings of TensorFlow's V2 tensor-bundle format (no I/O)."""
