"""Tensor bundles: TensorFlow's V2 checkpoint files (writer, reader, merge)."""
