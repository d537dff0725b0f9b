"""The ``jaxsaver`` command: inspect (TensorFlow's inspect_checkpoint, same output), ls, tree, meta, verify, diff, stats, convert, demo.

Exit codes: 0 success; 1 ``verify`` found corruption, ``diff`` found differences, or
``inspect --tensor_name`` named a tensor the checkpoint lacks (TensorFlow's text, printed as its
tool prints it); 2 a user error (missing checkpoint, bad or missing argument), printed as one
line plus a hint, never a traceback.

Example:
    $ jaxsaver inspect ckpt/model-3
    $ jaxsaver inspect ckpt/model-3 --tensor_name params/w
    $ jaxsaver ls ckpt && jaxsaver verify ckpt && jaxsaver diff ckpt/model-2 ckpt/model-3 --json
    $ jaxsaver convert --from-orbax orbax_ckpt/10/default tf_ckpt/model-10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    InvalidArgumentError,
    JaxsaverError,
    NotFoundError,
    UnimplementedError,
)

__all__ = ["main"]

class _UsageError(InvalidArgumentError):
    """A command-line mistake found after parsing (printed with the subcommand's name)."""


def _parse_bool(text: str) -> bool:
    """absl's boolean flag syntax (what TF's tool uses for ``--printoptions`` booleans)."""
    lowered = text.lower()
    if lowered in ("true", "t", "1"):
        return True
    if lowered in ("false", "f", "0"):
        return False
    raise InvalidArgumentError(f"Non-boolean argument to boolean flag: {text}")


def _flag_bool(text: str) -> bool:
    # TF's --all_tensors / --all_tensor_names: `v.lower() == "true"`.
    return text.lower() == "true"


def _printoption(kv: str) -> tuple[str, Any]:
    """``k=v`` for ``numpy.set_printoptions``, validated as TF's ``parse_numpy_printoption``."""
    parts = kv.split("=", 1)
    if len(parts) != 2 or not parts[0]:
        raise argparse.ArgumentTypeError(f"'{kv}' is not in the form k=v.")
    key, text = parts
    current = np.get_printoptions()
    if key not in current:
        raise argparse.ArgumentTypeError(f"'{key}' is not a valid printoption.")
    kind = type(current[key])
    if kind is type(None):
        raise argparse.ArgumentTypeError(f"Setting '{key}' from the command line is not supported.")
    try:
        return key, (_parse_bool(text) if kind is bool else kind(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ---------------------------------------------------------------------------------- inspect


def _count_total_params(reader: Any, count_exclude_pattern: str = "") -> int:
    var_to_shape_map = reader.get_variable_to_shape_map()
    if count_exclude_pattern:
        regex = re.compile(count_exclude_pattern)
        kept = {}
        excluded_tensors = 0
        excluded_params = 0
        for name, shape in var_to_shape_map.items():
            if regex.search(name):
                excluded_tensors += 1
                excluded_params += np.prod(shape)
            else:
                kept[name] = shape
        var_to_shape_map = kept
        print("# Excluding %d tensors (%d params) that match %s when counting." % (
            excluded_tensors, excluded_params, count_exclude_pattern))
    return np.sum([np.prod(shape) for shape in var_to_shape_map.values()], dtype=int)


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "O":
            return [_json_value(v) for v in value.tolist()] if value.ndim else _json_value(value.item())
        if value.dtype.kind == "c":
            return _json_value(np.stack([value.real, value.imag], axis=-1))
        if value.dtype.kind == "V" or value.dtype.kind not in "biuf":
            return value.astype(np.float64).tolist()
        return value.tolist()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        return _json_value(np.asarray(value))
    return value


def _cmd_inspect(args: argparse.Namespace) -> int:
    from jaxsaver.reader import load_checkpoint

    file_name = args.path or args.file_name
    if not file_name:
        raise _UsageError("a checkpoint PATH is required (a prefix such as ckpt/model-3, or a directory)")
    options = dict(args.printoptions or [])
    with np.printoptions(**options), load_checkpoint(file_name) as reader:
        if args.json:
            return _inspect_json(reader, args)
        shapes = dtypes = None
        if args.all_tensors or args.all_tensor_names:
            shapes = reader.get_variable_to_shape_map()
            dtypes = reader.get_variable_to_dtype_map()
            for key, value in sorted(shapes.items()):
                print("tensor: %s (%s) %s" % (key, dtypes[key].name, value))
                if args.all_tensors:
                    try:
                        print(reader.get_tensor(key))
                    except UnimplementedError:
                        print("<not convertible to a numpy dtype>")
        elif not args.tensor_name:
            print(reader.debug_string().decode("utf-8", errors="ignore"))
        else:
            if not reader.has_tensor(args.tensor_name):
                print("Tensor %s not found in checkpoint" % args.tensor_name)
                return 1
            shapes = reader.get_variable_to_shape_map()
            dtypes = reader.get_variable_to_dtype_map()
            print("tensor: %s (%s) %s" % (args.tensor_name, dtypes[args.tensor_name].name, shapes[args.tensor_name]))
            print(reader.get_tensor(args.tensor_name))
        print("# Total number of params: %d" % _count_total_params(reader, args.count_exclude_pattern))
    return 0


def _inspect_json(reader: Any, args: argparse.Namespace) -> int:
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    out: dict[str, Any] = {"path": reader.prefix}
    if args.tensor_name:
        if not reader.has_tensor(args.tensor_name) or args.tensor_name not in shapes:
            raise NotFoundError(f"Tensor {args.tensor_name} not found in checkpoint")
        names = [args.tensor_name]
    else:
        names = sorted(shapes)
    tensors = []
    for name in names:
        item: dict[str, Any] = {"name": name, "dtype": dtypes[name].name, "shape": shapes[name]}
        if args.all_tensors or args.tensor_name:
            try:
                item["value"] = _json_value(reader.get_tensor(name))
            except UnimplementedError:
                item["value"] = None
        tensors.append(item)
    out["tensors"] = tensors
    if args.count_exclude_pattern:
        regex = re.compile(args.count_exclude_pattern)
        out["excluded"] = sorted(n for n in shapes if regex.search(n))
    with contextlib.redirect_stdout(open(os.devnull, "w")):
        out["total_params"] = int(_count_total_params(reader, args.count_exclude_pattern))
    _print_json(out)
    return 0


# ---------------------------------------------------------------------------------- other commands


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _checkpoint_files(prefix: str) -> list[str]:
    from jaxsaver._store import resolve

    store, key = resolve(prefix)
    base = store.basename(key)
    found = []
    for name in store.list(key):
        if store.dirname(name) != store.dirname(key):
            continue
        tail = store.basename(name)[len(base):]
        if tail in (".index", ".meta") or re.fullmatch(r"\.data-\d{5}-of-\d{5}", tail):
            found.append(name)
    return sorted(found)


def _cmd_ls(args: argparse.Namespace) -> int:
    import datetime

    from jaxsaver._store import resolve
    from jaxsaver.checkpoint_management import get_checkpoint_state

    from jaxsaver._history import annotate_listing

    directory = args.dir
    state = get_checkpoint_state(directory)
    if state is None and not annotate_listing(directory, [])[1].untracked:
        raise CheckpointNotFoundError(f"no readable 'checkpoint' state file in {directory}")
    stamps = list(state.all_model_checkpoint_timestamps) if state else []
    paths = (list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]) if state else []
    managed, view = annotate_listing(directory, paths)  # metrics and the retention rules keeping each
    rows = []
    for i, prefix in enumerate(paths):
        store, key = resolve(prefix)
        files = _checkpoint_files(prefix)
        size = sum(store.size(f) for f in files)
        exists = store.exists(key + ".index")
        mtime = store.mtime(key + ".index") if exists else None
        match = re.search(r"-(\d+)$", store.basename(key))
        rows.append({
            "prefix": prefix,
            "step": int(match.group(1)) if match else None,
            "bytes": size,
            "mtime": mtime,
            "timestamp": stamps[i] if i < len(stamps) and len(stamps) == len(paths) else None,
            "exists": exists,
            "latest": prefix == state.model_checkpoint_path,
            "files": [store.basename(f) for f in files],
            **managed.get(prefix, {"metrics": None, "kept_by": None}),
        })
    if args.json:
        _print_json({"directory": directory, "checkpoints": rows, "untracked": list(view.untracked),
                     "uncommitted_files": list(view.leftovers)})
        return 0

    def when(t: float | None) -> str:
        return "-" if t is None else datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")

    from jaxsaver.inspect import human_size

    def metrics(row: dict[str, Any]) -> str:
        if "sidecar_error" in row:
            return "(corrupt sidecar)"
        return " ".join(f"{k}={v:.4g}" if v is not None else f"{k}=-" for k, v in (row["metrics"] or {}).items()) or "-"

    kept = [",".join(r["kept_by"]) if r["kept_by"] else "-" for r in rows]
    shown = [metrics(r) for r in rows]
    mw, kw = max([len("metrics"), *map(len, shown)]), max([len("kept by"), *map(len, kept)])
    print(f"{len(rows)} checkpoint{'s' if len(rows) != 1 else ''} in {directory} (oldest first, * = latest)")
    print(f"  {'step':>8}  {'size':>10}  {'modified':19}  {'metrics':{mw}}  {'kept by':{kw}}  prefix")
    for row, text, rules in zip(rows, shown, kept):
        step = "-" if row["step"] is None else str(row["step"])
        size = human_size(row["bytes"]) if row["exists"] else "missing"
        mark = "*" if row["latest"] else " "
        print(f"{mark} {step:>8}  {size:>10}  {when(row['mtime']):19}  {text:{mw}}  {rules:{kw}}  {row['prefix']}")
    if view.untracked:
        print(f"{len(view.untracked)} untracked (not in the state file; never deleted but by "
              "CheckpointManager.cleanup_untracked()):")
        for prefix in view.untracked:
            print(f"  {prefix}")
    if view.leftovers:
        print(f"{len(view.leftovers)} file(s) of saves that never committed:")
        for path in view.leftovers:
            print(f"  {path}")
    return 0


def _cmd_tree(args: argparse.Namespace) -> int:
    from jaxsaver.inspect import tree_text
    from jaxsaver.reader import load_checkpoint

    with load_checkpoint(args.path) as reader:
        root = reader.tree(use_meta=not args.no_meta)
    if args.json:
        _print_json(root.to_dict())
    else:
        print(tree_text(root, max_rows=10**9))
    return 0


def _cmd_meta(args: argparse.Namespace) -> int:
    from jaxsaver._meta_display import parse_meta_graph, summary
    from jaxsaver._store import resolve
    from jaxsaver.inspect import meta_graph_text

    path = args.path if args.path.endswith(".meta") else args.path + ".meta"
    store, key = resolve(path)
    meta = parse_meta_graph(store.read(key), path)
    if args.json:
        _print_json({"path": path, **summary(meta)})
    else:
        print(meta_graph_text(meta))
    return 0


def _progress(as_json: bool) -> bool:
    """The CLI shows a progress bar on stderr (work over 64 MiB) unless --json or tqdm is missing."""
    import importlib.util

    return not as_json and importlib.util.find_spec("tqdm") is not None


def _cmd_verify(args: argparse.Namespace) -> int:
    if not args.all:
        return _verify_one(args.path, as_json=args.json)
    from jaxsaver.checkpoint_management import get_checkpoint_state

    state = get_checkpoint_state(args.path)
    if state is None:
        raise CheckpointNotFoundError(f"--all: no readable 'checkpoint' state file in {args.path}")
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    codes = [_verify_one(path, as_json=args.json) for path in paths]
    return max(codes, default=0)


def _verify_one(path: str, *, as_json: bool) -> int:
    """Verifies one checkpoint (a prefix or a directory's latest); 1 when anything is corrupt."""
    from jaxsaver._format.slices import SliceError, encode_slice_key, format_extents, slice_from_proto
    from jaxsaver.reader import load_checkpoint

    with load_checkpoint(path) as reader:
        bundle = reader.bundle
        labels = {}
        entries = 0
        nbytes = 0
        for raw in bundle.raw_keys():
            info = bundle.info(raw.encode("utf-8", "surrogateescape"))
            if not info.is_sliced:
                entries += 1
                nbytes += info.entry.size
                continue
            for proto in info.entry.slices:
                try:
                    extents = slice_from_proto(proto)
                except SliceError:
                    continue
                key = encode_slice_key(info.name.encode("utf-8", "surrogateescape"), extents)
                labels[key.decode("utf-8", "surrogateescape")] = f"{info.name} [slice {format_extents(extents)}]"
        problems = [(labels.get(key, key), message) for key, message in bundle.verify(progress=_progress(as_json))]
        prefix = reader.prefix
    if as_json:
        _print_json({
            "path": prefix, "entries": entries, "bytes": nbytes, "ok": not problems,
            "problems": [{"tensor": name, "error": message} for name, message in problems],
        })
    else:
        for name, message in problems:
            print(f"CORRUPT {name}: {message}")
        from jaxsaver.inspect import human_size

        verdict = f"{len(problems)} corrupt" if problems else "all checksums match"
        print(f"verified {entries} stored tensors ({human_size(nbytes)}) in {prefix}: {verdict}")
    return 1 if problems else 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from jaxsaver.reader import diff

    result = diff(args.a, args.b)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(repr(result))
    return 1 if result else 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from jaxsaver.reader import load_checkpoint

    out = []
    with load_checkpoint(args.path) as reader:
        names = args.names or [n for n in reader.keys() if reader.dtype(n).itemsize is not None]
        for name in names:
            out.append(reader.stats(name))
    if args.json:
        _print_json([s.to_dict() for s in out])
    else:
        for s in out:
            print(repr(s))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from jaxsaver.interop import convert

    written = convert.from_orbax(args.src, args.dst) if args.from_orbax else convert.to_orbax(args.src, args.dst)
    if args.json:
        _print_json({"from": args.src, "to": written, "format": "bundle" if args.from_orbax else "orbax"})
    else:
        print(written)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from jaxsaver.demo import main as demo_main

    return demo_main([] if args.dir is None else ["--dir", args.dir])


# ---------------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxsaver", description="Inspect, list, verify and compare TensorFlow V2 checkpoints."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="print a checkpoint's tensors (TensorFlow's inspect_checkpoint)")
    p.add_argument("path", nargs="?", default="", help=_PATH_HELP)
    p.add_argument("--file_name", default="", help="same as PATH (TensorFlow's flag)")
    p.add_argument("--tensor_name", default="", help="name of the tensor to print")
    p.add_argument("--count_exclude_pattern", default="", help="regex of tensors not to count")
    p.add_argument("--all_tensors", nargs="?", const=True, default=False, type=_flag_bool,
                   help="print the names and values of all tensors")
    p.add_argument("--all_tensor_names", nargs="?", const=True, default=False, type=_flag_bool,
                   help="print the names of all tensors")
    p.add_argument("--printoptions", nargs="*", type=_printoption, help="numpy.set_printoptions k=v")
    p.set_defaults(handler=_cmd_inspect)

    p = sub.add_parser("ls", help="the checkpoint history of a directory (its 'checkpoint' file)")
    p.add_argument("dir", help="a checkpoint directory (holding a 'checkpoint' state file)")
    p.set_defaults(handler=_cmd_ls)

    p = sub.add_parser("tree", help="tensors as a nested tree with shapes, dtypes and sizes")
    p.add_argument("path", help=_PATH_HELP)
    p.add_argument("--no-meta", action="store_true", help="ignore the structure stored in PREFIX.meta")
    p.set_defaults(handler=_cmd_tree)

    p = sub.add_parser("meta", help="a .meta file's versions, saver, tree and exported function signatures")
    p.add_argument("path", help="FILE.meta, or a checkpoint prefix (its .meta)")
    p.set_defaults(handler=_cmd_meta)

    p = sub.add_parser("verify", help="read every tensor and check every checksum")
    p.add_argument("path", help=_PATH_HELP)
    p.add_argument("--all", action="store_true",
                   help="PATH is a directory: verify every checkpoint its 'checkpoint' file lists")
    p.set_defaults(handler=_cmd_verify)

    p = sub.add_parser("diff", help="compare two checkpoints tensor by tensor")
    p.add_argument("a", help="the first checkpoint (" + _PATH_HELP + ")")
    p.add_argument("b", help="the second checkpoint")
    p.set_defaults(handler=_cmd_diff)

    p = sub.add_parser("stats", help="min/max/mean/std and NaN/Inf counts per tensor")
    p.add_argument("path", help=_PATH_HELP)
    p.add_argument("names", nargs="*", help="tensor names (default: every numeric tensor)")
    p.set_defaults(handler=_cmd_stats)

    p = sub.add_parser("convert", help="orbax checkpoint -> bundle (--from-orbax DIR PREFIX), or back (--to-orbax)")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-orbax", action="store_true", help="SRC is an orbax checkpoint, DST a prefix")
    direction.add_argument("--to-orbax", action="store_true", help="SRC is a checkpoint, DST an orbax directory")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(handler=_cmd_convert)

    p = sub.add_parser("demo", help="train a small Flax model, save, inspect and restore it")
    p.add_argument("--dir", metavar="DIRECTORY",
                   help="where to write the checkpoints (kept); default: a temporary directory, removed at the end")
    p.set_defaults(handler=_cmd_demo)

    for name, action in sub.choices.items():
        if name != "demo":
            action.add_argument("--json", action="store_true", help="machine-readable output")
        action.set_defaults(usage=action.format_usage().strip())
    return parser


_PATH_HELP = "a checkpoint prefix (ckpt/model-3, no .index suffix) or a directory (its latest checkpoint)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jaxsaver")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _hint(err: BaseException) -> str:
    if isinstance(err, CheckpointNotFoundError):
        return ("pass a checkpoint prefix (e.g. ckpt/model-3, without .index or .data-*) or a directory "
                "with a 'checkpoint' file; `jaxsaver ls DIR` lists a directory's checkpoints")
    if isinstance(err, NotFoundError):
        return "`jaxsaver inspect PATH --all_tensor_names` lists the tensor names"
    if isinstance(err, DataLossError):
        return "the checkpoint is damaged; `jaxsaver verify PATH` lists every corrupt tensor"
    if isinstance(err, UnimplementedError):
        return "this checkpoint uses a feature jaxsaver does not read"
    if isinstance(err, PermissionError):
        return "check the file permissions"
    if isinstance(err, re.error):
        return "--count_exclude_pattern takes a Python regular expression"
    return "check the path and arguments (`jaxsaver COMMAND --help`)"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxsaver`` command line; returns the exit code."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or an argparse usage error (already printed)
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args))
    except _UsageError as err:
        print(args.usage, file=sys.stderr)
        print(f"jaxsaver {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 1
    except (JaxsaverError, OSError, re.error) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"jaxsaver {args.command}: error: {message}", file=sys.stderr)
        print(f"hint: {_hint(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
