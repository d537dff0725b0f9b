"""jaxsaver: TensorFlow's Saver for JAX pytrees, writing TensorFlow V2 checkpoints."""

from jaxsaver._bundle.merge import merge_bundles as merge_bundles
from jaxsaver._bundle.reader import BundleReader as BundleReader
from jaxsaver._bundle.writer import BundleWriter as BundleWriter
from jaxsaver._errors import CheckpointNotFoundError as CheckpointNotFoundError
from jaxsaver._errors import DataLossError as DataLossError
from jaxsaver._errors import InvalidArgumentError as InvalidArgumentError
from jaxsaver._errors import JaxsaverError as JaxsaverError
from jaxsaver._errors import NotFoundError as NotFoundError
from jaxsaver._errors import PermissionDeniedError as PermissionDeniedError
from jaxsaver._errors import StorageError as StorageError
from jaxsaver._errors import UnimplementedError as UnimplementedError

__version__ = "0.1.0"

__all__ = [
    "BundleReader",
    "BundleWriter",
    "CheckpointNotFoundError",
    "DataLossError",
    "InvalidArgumentError",
    "JaxsaverError",
    "NotFoundError",
    "PermissionDeniedError",
    "StorageError",
    "UnimplementedError",
    "merge_bundles",
]
