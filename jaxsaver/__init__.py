"""jaxsaver: TensorFlow's Saver for JAX pytrees, writing TensorFlow V2 checkpoints.

The flat public API. Names whose modules need JAX (``Saver``, ``SaverBuilder``, ``Saveable``,
...) load on first use (module ``__getattr__``), so ``import jaxsaver`` and every reading tool
(``CheckpointReader``, ``BundleReader``, the ``jaxsaver`` command) run without importing JAX.
"""

from typing import Any as _Any

from jaxsaver._bundle.merge import merge_bundles as merge_bundles
from jaxsaver._bundle.reader import BundleReader as BundleReader
from jaxsaver._bundle.writer import BundleWriter as BundleWriter
from jaxsaver._proto.checkpoint_state_pb2 import CheckpointState as CheckpointState
from jaxsaver._proto.meta_graph_pb2 import MetaGraphDef as MetaGraphDef
from jaxsaver._proto.saver_pb2 import SaverDef as SaverDef
from jaxsaver._errors import CheckpointNotFoundError as CheckpointNotFoundError
from jaxsaver._errors import DataLossError as DataLossError
from jaxsaver._errors import FailedPreconditionError as FailedPreconditionError
from jaxsaver._errors import NotACheckpointError as NotACheckpointError
from jaxsaver._errors import InvalidArgumentError as InvalidArgumentError
from jaxsaver._errors import JaxsaverError as JaxsaverError
from jaxsaver._errors import NotFoundError as NotFoundError
from jaxsaver._errors import PermissionDeniedError as PermissionDeniedError
from jaxsaver._errors import StorageError as StorageError
from jaxsaver._errors import UnimplementedError as UnimplementedError
from jaxsaver._errors import MissingDependencyError as MissingDependencyError
from jaxsaver._errors import CoordinationError, DistributedTimeoutError, PeerFailedError  # multi-process saves
from jaxsaver._options import SaverOptions as SaverOptions
from jaxsaver.checkpoint_management import checkpoint_exists as checkpoint_exists
from jaxsaver.checkpoint_management import generate_checkpoint_state_proto as generate_checkpoint_state_proto
from jaxsaver.checkpoint_management import get_checkpoint_mtimes as get_checkpoint_mtimes
from jaxsaver.checkpoint_management import get_checkpoint_state as get_checkpoint_state
from jaxsaver.checkpoint_management import latest_checkpoint as latest_checkpoint
from jaxsaver.checkpoint_management import meta_graph_filename as meta_graph_filename
from jaxsaver.checkpoint_management import remove_checkpoint as remove_checkpoint
from jaxsaver.checkpoint_management import update_checkpoint_state as update_checkpoint_state
from jaxsaver.reader import CheckpointReader as CheckpointReader
from jaxsaver.reader import DType as DType
from jaxsaver.reader import diff as diff
from jaxsaver.reader import list_variables as list_variables
from jaxsaver.reader import load_checkpoint as load_checkpoint
from jaxsaver.reader import load_variable as load_variable
from jaxsaver._async import SaveHandle as SaveHandle
from jaxsaver._store import cleanup as cleanup
from jaxsaver._progress import ProgressEvent as ProgressEvent

__version__ = "0.1.0"

# Names that import JAX, loaded on first access: one line per name, ``"name": "module",``.
_LAZY = {
    "FilenamePlaceholder": "jaxsaver.builder",
    "SaverBuilder": "jaxsaver.builder",
    "SaverGraph": "jaxsaver.builder",
    "sharded_filename": "jaxsaver.builder",
    "LeafKind": "jaxsaver.saveables",
    "Saveable": "jaxsaver.saveables",
    "SaveSpec": "jaxsaver.saveables",
    "saveables_from_pytree": "jaxsaver.saveables",
    "Saver": "jaxsaver.saver",
    "restore_as_numpy": "jaxsaver.saver",
    "CheckpointManager": "jaxsaver.manager",
    "CheckpointManagerOptions": "jaxsaver.manager",
    "init_from_checkpoint": "jaxsaver._assignment",
    "restore_nnx": "jaxsaver._nnx",
    "save_nnx": "jaxsaver._nnx",
    "ExportedFunction": "jaxsaver.meta_graph",
    "MetaGraph": "jaxsaver.meta_graph",
    "MetaInfo": "jaxsaver.meta_graph",
    "export_meta_graph": "jaxsaver.meta_graph",
    "import_meta_graph": "jaxsaver.meta_graph",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxsaver' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


from jaxsaver.inspect import register_notebook_displays as _register_notebook_displays  # noqa: E402

_register_notebook_displays()

__all__ = [
    "cleanup",
    "CheckpointState",
    "MetaGraphDef",
    "SaverDef",
    "CheckpointReader",
    "DType",
    "diff",
    "list_variables",
    "load_checkpoint",
    "load_variable",
    "FilenamePlaceholder",
    "LeafKind",
    "SaveSpec",
    "Saveable",
    "SaveHandle",
    "ProgressEvent",
    "Saver",
    "SaverBuilder",
    "SaverOptions",
    "SaverGraph",
    "checkpoint_exists",
    "generate_checkpoint_state_proto",
    "get_checkpoint_mtimes",
    "get_checkpoint_state",
    "latest_checkpoint",
    "meta_graph_filename",
    "remove_checkpoint",
    "restore_as_numpy",
    "init_from_checkpoint",
    "restore_nnx",
    "save_nnx",
    "saveables_from_pytree",
    "sharded_filename",
    "update_checkpoint_state",
    "BundleReader",
    "BundleWriter",
    "CheckpointNotFoundError",
    "DataLossError",
    "FailedPreconditionError",
    "NotACheckpointError",
    "InvalidArgumentError",
    "JaxsaverError",
    "NotFoundError",
    "PermissionDeniedError",
    "StorageError",
    "UnimplementedError",
    "CoordinationError", "DistributedTimeoutError", "PeerFailedError", "MissingDependencyError",
    "merge_bundles",
    "CheckpointManager", "CheckpointManagerOptions",
    "ExportedFunction", "MetaGraph", "MetaInfo", "export_meta_graph", "import_meta_graph",
]
