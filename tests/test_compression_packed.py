"""The packed file: bit-exact round trips, exactly the accounted bytes, and no way in for bad files."""

import hashlib
import json
import os
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fairseq_ext.compression import CompressionSpec, __version__, compress, load_compressed, save_compressed
from fairseq_ext.compression import packed

PREFIX_BYTES = 8 + 8 + 32


class TiedModel(nn.Module):
    def __init__(self, dtype=torch.float32):
        super().__init__()
        self.embed_tokens = nn.Embedding(13, 8)
        self.fc1 = nn.Linear(8, 16)
        self.layer_norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 8)
        self.output_projection = nn.Linear(8, 13, bias=False)
        self.output_projection.weight = self.embed_tokens.weight
        self.register_buffer("version", torch.tensor([3], dtype=torch.int64))
        self.to(dtype)


def bit_exact(left: dict, right: dict) -> bool:
    def raw(t):
        return t.contiguous().view(-1).view(torch.uint8)

    return sorted(left) == sorted(right) and all(
        left[k].dtype == right[k].dtype and left[k].shape == right[k].shape and torch.equal(raw(left[k]), raw(right[k]))
        for k in left
    )


SPECS = [
    CompressionSpec(sparsity=0.6, bits=4),
    CompressionSpec(sparsity=0.95, scope="layer", bits=3, scheme="asymmetric", prune_embeddings=True),
    CompressionSpec(sparsity=0.3, bits=8, granularity="tensor", quantize_embeddings=False),
    CompressionSpec(sparsity=0.5),
    CompressionSpec(bits=2, scheme="asymmetric"),
    CompressionSpec(),
    CompressionSpec(sparsity=0.6, bits=4, granularity="group", group_size=4),
    CompressionSpec(bits=3, scheme="asymmetric", granularity="group", group_size=8),
    CompressionSpec(sparsity=0.9, scope="layer", bits=2, scheme="asymmetric", granularity="group", group_size=2,
                    prune_embeddings=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"s{s.sparsity}-{s.scope}-b{s.bits}-{s.scheme}-{s.granularity}"
                                                      f"{s.group_size or ''}")
def test_compress_save_load_is_bit_exact_and_the_file_is_the_accounted_bytes(tmp_path, spec):
    torch.manual_seed(0)
    model = TiedModel()
    report, masks = compress(model, spec)
    path = tmp_path / "model.fxc"
    saved = save_compressed(path, model, spec, masks, metadata={"arch": "tiny", "layers": [1, 2]})
    assert saved == report
    state, metadata, header = load_compressed(path)
    assert bit_exact(state, model.state_dict())
    assert state["output_projection.weight"] is state["embed_tokens.weight"]
    assert metadata == {"arch": "tiny", "layers": [1, 2]}
    header_bytes = len(json.dumps(header, separators=(",", ":")).encode())
    assert os.path.getsize(path) == PREFIX_BYTES + header_bytes + report.total_bytes
    assert header["payload_bytes"] == report.total_bytes == header["accounted_bytes"]
    assert header["spec"] == spec.to_dict() and header["library_version"] == __version__
    assert header["achieved_sparsity"] == report.sparsity
    assert header["method"]["pruning"] == ("magnitude" if spec.prunes else "none")
    fresh = TiedModel()
    fresh.load_state_dict(state)
    assert bit_exact(fresh.state_dict(), model.state_dict())


model_cases = st.tuples(
    st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99]), st.sampled_from(["global", "layer"]), st.booleans(),
    st.sampled_from([2, 3, 4, 5, 6, 7, 8, 16, 32]), st.sampled_from(["symmetric", "asymmetric"]),
    st.sampled_from([("channel", 0), ("tensor", 0), ("group", 1), ("group", 4), ("group", 8)]), st.booleans(),
    st.integers(0, 1000),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)


@settings(max_examples=25, deadline=None)
@given(model_cases)
def test_any_spec_round_trips_bit_exactly_whether_saved_before_or_after_compress(tmp_path_factory, case):
    sparsity, scope, prune_embeddings, bits, scheme, (granularity, group_size), quantize_embeddings, seed, dtype = case
    spec = CompressionSpec(sparsity, scope, prune_embeddings, bits, scheme, granularity, quantize_embeddings,
                           group_size=group_size)
    torch.manual_seed(seed)
    model = TiedModel(dtype if not spec.quantizes else torch.float32)
    folder = tmp_path_factory.mktemp("roundtrip")
    # Saving the uncompressed model writes what compress() is about to produce ...
    before = save_compressed(folder / "before.fxc", model, spec)
    report, masks = compress(model, spec)
    state_before, _, _ = load_compressed(folder / "before.fxc")
    assert before == report and bit_exact(state_before, model.state_dict())
    # ... and saving the compressed model re-derives the same codes.
    save_compressed(folder / "after.fxc", model, spec, masks)
    state_after, _, header = load_compressed(folder / "after.fxc")
    assert bit_exact(state_after, model.state_dict())
    assert os.path.getsize(folder / "after.fxc") <= 1.02 * report.total_bytes + PREFIX_BYTES + 8192


def test_quantized_records_hold_granularity_and_group_size(tmp_path):
    torch.manual_seed(0)
    spec = CompressionSpec(sparsity=0.5, bits=4, scheme="asymmetric", granularity="group", group_size=4)
    header = load_compressed_header(tmp_path, TiedModel(), spec)
    quantized = {t["name"]: (t["granularity"], t["group_size"], t["groups"])
                 for t in header["tensors"] if t["quantized"]}
    # 13x8, 16x8 and 8x16 weights in groups of 4 columns
    assert quantized == {"embed_tokens.weight": ("group", 4, 26), "fc1.weight": ("group", 4, 32),
                         "fc2.weight": ("group", 4, 32)}
    channel = load_compressed_header(tmp_path, TiedModel(), CompressionSpec(bits=4))
    assert {(t["granularity"], t["group_size"], t["groups"]) for t in channel["tensors"] if t["quantized"]} == {
        ("channel", 0, 13), ("channel", 0, 16), ("channel", 0, 8)}


def load_compressed_header(folder, model, spec, masks=None):
    save_compressed(folder / "header.fxc", model, spec, masks)
    return load_compressed(folder / "header.fxc")[2]


def two_of_four_masks(model):
    """Keep the two larger magnitudes of every 4 consecutive inputs of fc1 and fc2 (a 2:4 pattern)."""
    masks = {}
    for name in ("fc1.weight", "fc2.weight"):
        quads = model.get_parameter(name).detach().abs().reshape(-1, 4)
        keep = torch.zeros_like(quads, dtype=torch.bool).scatter_(1, quads.topk(2, dim=1).indices, True)
        masks[name] = keep.reshape(model.get_parameter(name).shape)
    return masks


def test_the_header_names_the_methods_of_the_spec(tmp_path):
    torch.manual_seed(0)
    model = TiedModel()
    masks = two_of_four_masks(model)
    spec = CompressionSpec(sparsity=0.5, prune_method="wanda", prune_pattern="2:4", bits=4, quant_method="gptq",
                           granularity="group", group_size=8)
    report, _ = compress(model, spec, masks)
    header = load_compressed_header(tmp_path, model, spec, masks)
    assert header["method"] == {"pruning": "wanda 2:4", "quantization": "gptq"}
    assert header["spec"] == spec.to_dict() and header["accounted_bytes"] == report.total_bytes
    assert bit_exact(load_compressed(tmp_path / "header.fxc")[0], model.state_dict())
    methods = {
        CompressionSpec(sparsity=0.5, prune_method="sparsegpt"): {"pruning": "sparsegpt", "quantization": "none"},
        CompressionSpec(sparsity=0.5, prune_pattern="2:4", bits=3): {"pruning": "magnitude 2:4",
                                                                     "quantization": "uniform round-to-nearest"},
        CompressionSpec(bits=8, quant_method="gptq"): {"pruning": "none", "quantization": "gptq"},
    }
    for spec, method in methods.items():
        assert load_compressed_header(tmp_path, model, spec, masks if spec.prunes else None)["method"] == method
    with pytest.raises(ValueError, match="prune_method 'sparsegpt' with prune_pattern 'unstructured' needs its masks"):
        save_compressed(tmp_path / "m.fxc", model, CompressionSpec(sparsity=0.5, prune_method="sparsegpt"))


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    torch.manual_seed(1)
    model = TiedModel()
    spec = CompressionSpec(sparsity=0.7, bits=3, scheme="asymmetric")
    path = tmp_path_factory.mktemp("packed") / "small.fxc"
    save_compressed(path, model, spec, metadata={"note": "x"})
    return path.read_bytes()


def load_bytes(tmp_path, data: bytes):
    path = tmp_path / "candidate.fxc"
    path.write_bytes(data)
    return load_compressed(path)


def test_every_truncation_is_a_value_error(tmp_path, small_file):
    for length in list(range(0, 200)) + list(range(200, len(small_file), 7)):
        with pytest.raises(ValueError):
            load_bytes(tmp_path, small_file[:length])
    with pytest.raises(ValueError, match="truncated or padded"):
        load_bytes(tmp_path, small_file + b"\0")


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_any_altered_byte_is_a_value_error(tmp_path_factory, small_file, data):
    position = data.draw(st.integers(0, len(small_file) - 1))
    flip = data.draw(st.integers(1, 255))
    altered = bytearray(small_file)
    altered[position] ^= flip
    with pytest.raises(ValueError, match="not a valid compressed model file"):
        load_bytes(tmp_path_factory.mktemp("altered"), bytes(altered))


def test_foreign_files_are_value_errors(tmp_path):
    for foreign in [b"", b"PK\x03\x04 not ours", pickle.dumps({"weight": [1.0]}), b"FSEXTCMP" + b"\xff" * 40]:
        with pytest.raises(ValueError, match="not a valid compressed model file"):
            load_bytes(tmp_path, foreign)
    torch.save({"w": torch.ones(2)}, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="packed-format magic"):
        load_compressed(tmp_path / "checkpoint.pt")


def resign(data: bytes, edit) -> bytes:
    """A file whose header was edited by someone who also fixed the header checksum."""
    _, length, _ = packed.PREFIX.unpack(data[:PREFIX_BYTES])
    header = json.loads(data[PREFIX_BYTES : PREFIX_BYTES + length])
    edit(header)
    header_bytes = json.dumps(header).encode()
    prefix = packed.PREFIX.pack(packed.MAGIC, len(header_bytes), hashlib.sha256(header_bytes).digest())
    return prefix + header_bytes + data[PREFIX_BYTES + length :]


def first_with_layout(header, layout):
    return next(t for t in header["tensors"] if t["layout"] == layout)


EDITS = {
    "blob out of bounds": lambda h: h["tensors"][0]["blobs"]["values"].__setitem__(0, 10**12),
    "blob of the wrong length": lambda h: h["tensors"][0]["blobs"]["values"].__setitem__(1, 1),
    "huge shape": lambda h: first_with_layout(h, "delta")["shape"].__setitem__(0, 10**15),
    "shape of a dense tensor": lambda h: first_with_layout(h, "dense")["shape"].append(2),
    "unknown dtype": lambda h: h["tensors"][0].__setitem__("dtype", "object"),
    "bits": lambda h: h["tensors"][0].__setitem__("bits", 12),
    "delta field width": lambda h: first_with_layout(h, "delta").__setitem__("delta_bits", 40),
    "entries": lambda h: first_with_layout(h, "delta").__setitem__("entries", 1),
    "layout": lambda h: first_with_layout(h, "delta").__setitem__("layout", "bitmap"),
    "missing blob": lambda h: h["tensors"][0]["blobs"].clear(),
    "duplicate name": lambda h: h["tensors"][1].__setitem__("name", h["tensors"][0]["name"]),
    "alias to nothing": lambda h: h["aliases"].__setitem__("x", "nowhere"),
    "format version": lambda h: h.__setitem__("format_version", 99),
    "other format": lambda h: h.__setitem__("format", "safetensors"),
    "tensor list": lambda h: h.__setitem__("tensors", {"a": 1}),
    "negative offset": lambda h: h["tensors"][0]["blobs"]["values"].__setitem__(0, -1),
    "boolean count": lambda h: h["tensors"][0].__setitem__("entries", True),
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
def test_a_re_signed_but_inconsistent_header_is_a_value_error(tmp_path, small_file, edit):
    assert load_bytes(tmp_path, resign(small_file, lambda header: None))[1] == {"note": "x"}  # the control
    with pytest.raises(ValueError, match="not a valid compressed model file"):
        load_bytes(tmp_path, resign(small_file, edit))


@pytest.fixture(scope="module")
def group_file(tmp_path_factory):
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("packed") / "group.fxc"
    spec = CompressionSpec(sparsity=0.5, bits=4, scheme="asymmetric", granularity="group", group_size=4)
    save_compressed(path, TiedModel(), spec)
    return path.read_bytes()


def first_quantized(header):
    return next(t for t in header["tensors"] if t["quantized"])


GROUP_EDITS = {
    "group size that does not tile the width": lambda h: first_quantized(h).__setitem__("group_size", 3),
    "group size of another group count": lambda h: first_quantized(h).__setitem__("group_size", 8),
    "no group size": lambda h: first_quantized(h).pop("group_size"),
    "boolean group size": lambda h: first_quantized(h).__setitem__("group_size", True),
    "group size on channel granularity": lambda h: first_quantized(h).__setitem__("granularity", "channel"),
}


@pytest.mark.parametrize("edit", GROUP_EDITS.values(), ids=GROUP_EDITS.keys())
def test_a_re_signed_header_with_inconsistent_groups_is_a_value_error(tmp_path, group_file, edit):
    with pytest.raises(ValueError, match="bad group (size|count)"):
        load_bytes(tmp_path, resign(group_file, edit))


def test_a_file_written_before_group_granularity_still_loads(tmp_path, small_file):
    """Such files lack the records' group_size and the spec's newer options: they read as the defaults."""
    def as_written_before(header):
        for record in header["tensors"]:
            record.pop("group_size", None)
        for option in ("prune_method", "prune_pattern", "quant_method", "group_size"):
            del header["spec"][option]

    state, metadata, header = load_bytes(tmp_path, resign(small_file, as_written_before))
    assert bit_exact(state, load_bytes(tmp_path, small_file)[0]) and metadata == {"note": "x"}
    assert CompressionSpec.from_dict(header["spec"]) == CompressionSpec(sparsity=0.7, bits=3, scheme="asymmetric")
    with pytest.raises(ValueError, match="bad group size"):  # the channel file claiming groups of 4
        load_bytes(tmp_path, resign(small_file, lambda h: first_quantized(h).__setitem__("group_size", 4)))


def test_a_deeply_nested_header_is_a_value_error(tmp_path, small_file):
    header_bytes = b"[" * 100_000 + b"]" * 100_000
    data = packed.PREFIX.pack(packed.MAGIC, len(header_bytes), hashlib.sha256(header_bytes).digest()) + header_bytes
    with pytest.raises(ValueError, match="not a valid compressed model file"):
        load_bytes(tmp_path, data)


def test_loading_never_unpickles(tmp_path, small_file, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    state, metadata, header = load_bytes(tmp_path, small_file)
    assert metadata == {"note": "x"} and header["format"] == packed.FORMAT


def test_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.fxc"
    path.write_bytes(b"previous")
    model = TiedModel()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_compressed(path, model, CompressionSpec(bits=4))
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["model.fxc"]
    monkeypatch.undo()
    save_compressed(path, model, CompressionSpec(bits=4))
    assert os.listdir(tmp_path) == ["model.fxc"] and load_compressed(path)[0]


def test_bad_requests_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="fc1.weight is float16: quantization needs float32"):
        save_compressed(tmp_path / "m.fxc", TiedModel(torch.float16), CompressionSpec(bits=4))
    model = TiedModel()
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save_compressed(tmp_path / "m.fxc", model, CompressionSpec(bits=4), metadata={"bad": object()})
    with pytest.raises(ValueError, match="metadata must be a dict"):
        save_compressed(tmp_path / "m.fxc", model, CompressionSpec(bits=4), metadata=[1])
    with pytest.raises(ValueError, match="bits=1"):
        save_compressed(tmp_path / "m.fxc", model, CompressionSpec(bits=1))
    with pytest.raises(ValueError, match="mask 'fc9.weight' matches no parameter"):
        save_compressed(tmp_path / "m.fxc", model, CompressionSpec(sparsity=0.5), masks={"fc9.weight": torch.ones(1)})
    assert not os.listdir(tmp_path)
