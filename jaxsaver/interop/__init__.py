"""Interoperability beyond TF1 checkpoints: TF2 object graphs (:mod:`.tf2`) and orbax (:mod:`.orbax`).

The submodules are imported on use (``from jaxsaver.interop import orbax``); neither imports
TensorFlow or orbax. :mod:`.convert` turns orbax checkpoints into bundles and back.
"""

__all__ = ["convert", "orbax", "tf2"]
