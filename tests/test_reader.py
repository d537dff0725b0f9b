"""``CheckpointReader`` and friends against TensorFlow's reader, plus the tree / stats / diff / HTML views."""

from __future__ import annotations

import base64
import html.parser
import os
import shutil

import numpy as np
import pytest

import jaxsaver
from jaxsaver import BundleWriter, CheckpointNotFoundError, NotFoundError
from jaxsaver._proto import meta_graph_pb2
from jaxsaver.inspect import build_tree, meta_graph_html, saver_html, saver_text, tree_text
from jaxsaver.reader import CheckpointReader, DType, diff, list_variables, load_checkpoint, load_variable

from inspect_helpers import CASES, tf_reference

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ref():
    return tf_reference()


# ---------------------------------------------------------------------------------- TF parity


@pytest.mark.parametrize("case", CASES)
def test_reader_matches_tensorflow(case, ref):
    r = ref["refs"][case]
    with CheckpointReader(r["prefix"]) as reader:
        assert reader.debug_string() == base64.b64decode(r["debug_string"])
        assert reader.get_variable_to_shape_map() == r["shapes"]
        dtypes = reader.get_variable_to_dtype_map()
        assert {k: v.name for k, v in dtypes.items()} == r["dtypes"]
        assert all(repr(v) == f"tf.{v.name}" for v in dtypes.values())
        for name, expected in r["tensors"].items():
            assert repr(reader.get_tensor(name)) == expected, name
            assert reader.has_tensor(name)
    assert [list(x) for x in list_variables(r["prefix"])] == [list(x) for x in r["list_variables"]]


def test_load_checkpoint_resolves_a_directory(ref):
    prefix = ref["refs"]["tf2"]["prefix"]
    reader = load_checkpoint(os.path.dirname(prefix))
    assert reader.prefix == prefix
    assert load_variable(os.path.dirname(prefix), "step/.ATTRIBUTES/VARIABLE_VALUE:0") == 5


def test_not_found_errors(ref, tmp_path):
    prefix = ref["refs"]["plain"]["prefix"]
    reader = load_checkpoint(prefix)
    with pytest.raises(NotFoundError, match="^Key v3 not found in checkpoint$") as info:
        reader.get_tensor("v3")
    assert isinstance(info.value, KeyError)
    assert not reader.has_tensor("v3") and "v3" not in reader
    with pytest.raises(CheckpointNotFoundError, match="without '.index'") as info:
        load_checkpoint(prefix + ".index")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(CheckpointNotFoundError, match="Failed to find any matching files"):
        CheckpointReader(str(tmp_path / "nothing"))
    with pytest.raises(CheckpointNotFoundError, match="Couldn't find 'checkpoint' file"):
        load_checkpoint(str(tmp_path))


def test_dtype_objects():
    f32 = DType(1)
    assert (repr(f32), str(f32), f32.name, f32.tf_name) == ("tf.float32", "<dtype: 'float32'>", "float32", "DT_FLOAT")
    assert f32 == "float32" and f32 == np.float32 and f32 == DType(1) and f32 != DType(2) and f32 != np.int32
    assert DType(7).name == "string" and DType(7).itemsize is None and DType(14).itemsize == 2
    assert len({DType(1), DType(1), DType(3)}) == 2


def test_reads_only_the_index(ref, tmp_path):
    """Metadata calls never open a data file: they work with the data files gone."""
    src = ref["refs"]["merged"]["prefix"]
    prefix = str(tmp_path / "model")
    shutil.copy(src + ".index", prefix + ".index")
    reader = load_checkpoint(prefix)
    assert list_variables(prefix) == [("a", [2, 2]), ("c", []), ("m", [4, 2])]
    assert reader.get_variable_to_dtype_map()["m"] == np.float32
    root = reader.tree()
    assert (root.num_tensors, root.num_elements) == (3, 13)
    assert "m" in repr(reader) and "<details" in reader._repr_html_()
    with pytest.raises(CheckpointNotFoundError):
        reader.get_tensor("a")


# ---------------------------------------------------------------------------------- tree


def test_tree_groups_names_and_reports_storage(ref):
    reader = load_checkpoint(ref["refs"]["merged"]["prefix"])
    root = reader.tree()
    m = next(n for n in root.children if n.name == "m").tensor
    assert m.slices == (((0, 2), (0, 2)), ((2, 2), (0, 2))) and m.shards == (0, 1) and m.nbytes == 32
    assert "2 slices" in m.storage() and "shards 0,1" in m.storage()
    tf2 = load_checkpoint(ref["refs"]["tf2"]["prefix"]).tree()
    model = next(n for n in tf2.children if n.name == "model")
    assert sorted(c.name for c in model.children) == ["layers", "table", "w"]
    table = next(n for n in model.children if n.name == "table")
    assert table.children[0].name == "a/b.c"


def test_tree_uses_the_saver_meta(tmp_path):
    import jax.numpy as jnp

    state = {"params": {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}, "step": jnp.int32(2)}
    saver = jaxsaver.Saver(template=state)
    prefix = saver.save(state, str(tmp_path / "model"), global_step=1)
    reader = load_checkpoint(str(tmp_path))
    description = reader.meta_tree()
    assert {leaf["name"] for leaf in description["leaves"]} == {"params/dense/kernel", "params/dense/bias", "step"}
    root = reader.tree()
    assert [c.name for c in root.children] == ["params", "step"]
    assert (root.num_tensors, root.num_elements, root.nbytes) == (3, 16, 64)
    text = tree_text(root)
    assert text.splitlines()[0] == f"{prefix}: 3 tensors, 16 params, 64 B"
    # Saver and MetaGraphDef views
    assert "kernel" in saver_text(saver) and "max_to_keep=5" in saver_text(saver)
    page = _parse(saver_html(saver))
    assert {"kernel", "bias", "step", "[4,3]"} <= page.texts
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(open(prefix + ".meta", "rb").read())
    page = _parse(meta_graph_html(meta))
    assert {"kernel", "[4,3]", "float32", "16 params", "64 B"} <= page.texts


def test_tree_name_both_tensor_and_group():
    from jaxsaver.inspect import TensorSummary

    leaves = [TensorSummary(name=n, shape=(), dtype="float32", num_elements=1, nbytes=4) for n in ("a", "a/b", "//x")]
    root = build_tree(leaves)
    a = next(n for n in root.children if n.name == "a")
    assert a.tensor.name == "a" and a.children[0].name == "b" and root.num_tensors == 3
    assert "  ." in tree_text(root)


# ---------------------------------------------------------------------------------- stats and diff


def test_stats_stream_in_chunks(ref):
    reader = load_checkpoint(ref["refs"]["plain"]["prefix"])
    big = reader.get_tensor("big").astype(np.float64)
    s = reader.stats("big", chunk_bytes=256)  # two rows per chunk
    assert (s.min, s.max, s.count, s.nan_count) == (0.0, 1199.0, 1200, 0)
    assert s.mean == pytest.approx(big.mean()) and s.std == pytest.approx(big.std())
    h = reader.stats("half", chunk_bytes=1)
    assert (h.nan_count, h.inf_count, h.finite, h.min, h.max, h.mean) == (1, 1, 2, -2.0, 1.5, -0.25)
    assert reader.stats("empty").mean is None and reader.stats("global_step").max == 7
    sliced = load_checkpoint(ref["refs"]["sliced"]["prefix"]).stats("w", chunk_bytes=24)
    assert (sliced.min, sliced.max, sliced.mean) == (0.0, 23.0, 11.5)
    with pytest.raises(jaxsaver.InvalidArgumentError, match="numeric"):
        load_checkpoint(ref["refs"]["strings"]["prefix"]).stats("s1")
    assert "NaN 1" in repr(h) and "<table>" in h._repr_html_()


def test_diff(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with BundleWriter(a) as w:
        w.add("same", np.array([1.0, np.nan], np.float32))
        w.add("vals", np.zeros((30, 2), np.float64))
        w.add("shape", np.zeros(3, np.float32))
        w.add("dtype", np.zeros(3, np.float32))
        w.add("str", np.array([b"a", b"b"], dtype=object))
        w.add("only_a", np.int32(1))
    with BundleWriter(b) as w:
        w.add("same", np.array([1.0, np.nan], np.float32))
        vals = np.zeros((30, 2), np.float64)
        vals[17, 1] = -2.5
        vals[29, 0] = np.nan
        w.add("vals", vals)
        w.add("shape", np.zeros(4, np.float32))
        w.add("dtype", np.zeros(3, np.float64))
        w.add("str", np.array([b"a", b"c"], dtype=object))
        w.add("only_b", np.int32(1))
    result = diff(a, b, chunk_bytes=64)
    assert result and not result.identical
    assert [t.name for t in result.only_in_a] == ["only_a"] and [t.name for t in result.only_in_b] == ["only_b"]
    by_name = {d.name: d for d in result.common}
    assert by_name["same"].equal
    assert (by_name["vals"].num_different, by_name["vals"].max_abs_diff) == (2, float("inf"))
    assert by_name["shape"].changed_type and by_name["dtype"].changed_type
    assert by_name["str"].num_different == 1
    assert {d.name for d in result.different} == {"vals", "shape", "dtype", "str"}
    assert not diff(a, a)
    page = _parse(result._repr_html_())
    assert {"only_a", "only_b", "vals", "float32 [3] -> float32 [4]"} <= page.texts
    assert "~ str: 1 elements differ" in repr(result)


# ---------------------------------------------------------------------------------- HTML


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.texts: set[str] = set()
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.in_style = tag == "style"
        if tag not in ("br", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        self.in_style = False
        assert self.stack and self.stack[-1] == tag, (self.stack[-5:], tag)
        self.stack.pop()

    def handle_data(self, data):
        if not self.in_style and data.strip():
            self.texts.add(data.strip())
            self.texts.update(p.strip() for p in data.split("·") if p.strip())


def _parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert not parser.stack, parser.stack  # every element closed, properly nested
    return parser


def test_html_repr_renders_names_shapes_and_totals(ref):
    reader = load_checkpoint(ref["refs"]["ours"]["prefix"])
    page = _parse(reader._repr_html_())
    assert "details" in page.tags and "summary" in page.tags and "table" in page.tags
    assert {"kernel", "bias", "count", "note", "sl", "[3,4]", "[4]", "[4,3]", "float32", "string"} <= page.texts
    assert {"total", "5 tensors", "30 params", "48 B"} <= page.texts  # kernel 48 B
    assert "params/" in page.texts and "2 tensors, 16 params, 64 B" in page.texts
    # names are escaped
    leaves = [jaxsaver.inspect.TensorSummary(name="<b>&", shape=(1,), dtype="float32", num_elements=1, nbytes=4)]
    assert "&lt;b&gt;&amp;" in jaxsaver.inspect.tree_html(build_tree(leaves))


def test_meta_graph_def_has_a_notebook_display(tmp_path):
    """A MetaGraphDef (from Saver.export_meta_graph) renders as HTML and text in IPython."""
    import numpy as np
    from IPython.core.interactiveshell import InteractiveShell

    from jaxsaver import Saver
    from jaxsaver.inspect import register_notebook_displays

    shell = InteractiveShell.instance()
    try:
        assert register_notebook_displays(shell)
        meta = Saver(template={"params": {"w": np.zeros((3, 4), np.float32)}}).export_meta_graph()
        data, _ = shell.display_formatter.format(meta)
        assert "params" in data["text/html"] and "[3,4]" in data["text/html"]
        assert data["text/plain"].startswith("MetaGraphDef")
    finally:
        InteractiveShell.clear_instance()
