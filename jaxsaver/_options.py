"""``SaverOptions``: a saver's settings as one frozen value, shared by ``Saver`` and ``SaverBuilder``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SaverOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SaverOptions:
    """What a :class:`jaxsaver.Saver` was asked for (its keyword arguments, TF's names).

    Example:
        >>> SaverOptions(sharded=True).scope
        'save'
    """

    reshape: bool = False
    """Allow restoring a tensor into a leaf of another shape with as many elements."""
    sharded: bool = False
    """Write one part bundle per device (and per shard) and merge them."""
    max_to_keep: int | None = 5
    """How many recent checkpoints to keep (None or 0: all)."""
    keep_checkpoint_every_n_hours: float = 10000.0
    """Additionally keep one checkpoint per this many hours."""
    name: str | None = None
    """The graph's name scope (default ``"save"``)."""
    restore_sequentially: bool = False
    """Read tensors one at a time (lower peak memory)."""
    allow_empty: bool = False
    """An empty saver is a no-op instead of an error."""
    pad_step_number: bool = False
    """``model-00000005`` instead of ``model-5``."""
    save_relative_paths: bool = False
    """Write relative paths into the ``checkpoint`` state file."""
    filename: str | None = None
    """The default checkpoint prefix of the graph's filename placeholder."""
    object_graph: bool = False
    """Also write a TF2 ``TrackableObjectGraph`` (and ``save_counter``) so that
    ``tf.train.Checkpoint`` restores the checkpoint into a ``tf.Module`` tree of the same shape."""
    snapshot: str = "host"
    """How an asynchronous save holds its bytes once it returns: ``"host"`` (fresh host copies;
    host memory = the bytes saved) or ``"device"`` (on-device copies streamed to host through a
    bounded window in the background; one extra device copy). Synchronous saves always stream
    the caller's arrays through the window."""

    barrier_timeout_s: float | None = None
    """Multi-process saves: seconds each process waits for the others at each step (None:
    ``JAXSAVER_BARRIER_TIMEOUT_S`` or :data:`jaxsaver.distributed.DEFAULT_TIMEOUT_S`)."""

    def __post_init__(self) -> None:
        if self.snapshot not in ("host", "device"):
            from jaxsaver._errors import InvalidArgumentError

            raise InvalidArgumentError(f"snapshot must be 'host' or 'device', got {self.snapshot!r}")
        if self.barrier_timeout_s is not None and not self.barrier_timeout_s > 0:
            from jaxsaver._errors import InvalidArgumentError

            raise InvalidArgumentError(f"barrier_timeout_s must be a positive number of seconds, got {self.barrier_timeout_s!r}")

    @property
    def scope(self) -> str:
        """The name scope of the saver's ops."""
        return self.name or "save"
