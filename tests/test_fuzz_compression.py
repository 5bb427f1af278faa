"""Fuzzing (issue 8, item 4): the packed-file reader and the compression options take arbitrary input and answer
with a clear ValueError or a success: never another exception, a crash or a hang (hypothesis' deadline).

The existing tests of test_compression_packed.py flip bytes of a signed file (the checksums catch those); here the
mutations are re-signed, so they reach the header validation and the decoders behind the checksums."""
import hashlib
import json
import math
import struct

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from fairseq_ext.compression import CompressionSpec, load_compressed, save_compressed, sparsity_at
from fairseq_ext.compression.packed import MAGIC, PREFIX

FUZZ = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])

SPECS = {
    "dense": CompressionSpec(),
    "bitmap 4-bit asym": CompressionSpec(sparsity=0.5, bits=4, scheme="asymmetric"),
    "delta 3-bit tensor": CompressionSpec(sparsity=0.95, bits=3, granularity="tensor", scope="layer"),
    "pruned fp32": CompressionSpec(sparsity=0.7, prune_embeddings=True),
    "group 4-bit asym": CompressionSpec(sparsity=0.5, bits=4, scheme="asymmetric", granularity="group", group_size=4),
}


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed_tokens = nn.Embedding(11, 8)
        self.fc1 = nn.Linear(8, 24)
        self.fc2 = nn.Linear(24, 8)
        self.output_projection = nn.Linear(8, 11, bias=False)
        self.output_projection.weight = self.embed_tokens.weight
        self.register_buffer("version", torch.tensor([3], dtype=torch.int64))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    out = {}
    for name, spec in SPECS.items():
        path = folder / f"{name.replace(' ', '_')}.fxc"
        save_compressed(path, Small(), spec, metadata={"cfg": {"model": {"arch": "x"}}, "num_updates": 3})
        data = path.read_bytes()
        _, length, _ = PREFIX.unpack(data[: PREFIX.size])
        out[name] = (json.loads(data[PREFIX.size : PREFIX.size + length]), data[PREFIX.size + length :])
    return out


def signed(header, payload, *, sign_payload=True):
    """A file whose checksums match whatever header and payload it carries."""
    if sign_payload and isinstance(header, dict):
        header = {**header, "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    return PREFIX.pack(MAGIC, len(header_bytes), hashlib.sha256(header_bytes).digest()) + header_bytes + payload


def load_or_value_error(tmp_path, data):
    path = tmp_path / "fuzzed.fxc"
    path.write_bytes(data)
    try:
        state, _, _ = load_compressed(path)
    except ValueError as error:
        assert str(error), "a ValueError must say what is wrong"
        return None
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    return state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["dense", "bitmap", "delta", "float32", "int8", "asymmetric", "channel", "group"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)


def paths(value, prefix=()):
    """Every position in a JSON tree."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from paths(child, prefix + (i,))


def replaced(tree, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {**tree, head: replaced(tree[head], rest, new)}
    return [replaced(child, rest, new) if i == head else child for i, child in enumerate(tree)]


@FUZZ
@given(name=st.sampled_from(sorted(SPECS)), data=st.data(), new=json_values, small_ints=st.integers(-3, 70))
def test_any_re_signed_header_edit_is_a_value_error_or_a_clean_load(tmp_path, files, name, data, new, small_ints):
    header, payload = files[name]
    where = data.draw(st.sampled_from(list(paths(header))[1:]))
    value = data.draw(st.sampled_from([new, small_ints]))
    load_or_value_error(tmp_path, signed(replaced(header, where, value), payload, sign_payload=False))


@FUZZ
@given(name=st.sampled_from(sorted(SPECS)), data=st.data())
def test_any_re_signed_payload_edit_is_a_value_error_or_a_clean_load(tmp_path, files, name, data):
    header, payload = files[name]
    payload = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(payload)))
    if cut is not None:  # a truncated or extended payload, with counts re-signed to match it
        payload = payload[:cut] + bytes(data.draw(st.integers(0, 3)))
    state = load_or_value_error(tmp_path, signed(header, bytes(payload)))
    if state is not None and cut is None:
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in Small().state_dict().items()}


@FUZZ
@given(header=json_values | st.fixed_dictionaries({
    "format": st.just("fairseq_ext.compression.packed"), "format_version": st.integers(0, 3),
    "metadata": json_values, "aliases": json_values,
    "tensors": st.lists(st.fixed_dictionaries({
        "name": st.text(max_size=4), "dtype": st.sampled_from(["float32", "int8", "bool", "bfloat16", "x"]),
        "shape": st.lists(st.integers(-1, 2**40), max_size=3), "layout": st.sampled_from(["dense", "bitmap", "delta"]),
        "entries": st.integers(-1, 2**40), "bits": st.integers(-1, 70), "delta_bits": st.integers(-1, 40),
        "quantized": st.booleans() | st.none(), "scheme": st.sampled_from(["symmetric", "asymmetric"]),
        "granularity": st.sampled_from(["channel", "tensor", "group"]), "groups": st.integers(-1, 50),
        "blobs": st.dictionaries(st.sampled_from(["values", "index", "scales", "zero_points"]),
                                 st.lists(st.integers(-1, 2**40), min_size=2, max_size=2), max_size=4),
    }, optional={"group_size": st.integers(-1, 9) | st.booleans() | st.none()}), max_size=3),
}), payload=st.binary(max_size=64))
def test_random_headers_are_value_errors_or_clean_loads(tmp_path, header, payload):
    load_or_value_error(tmp_path, signed(header, payload))


@FUZZ
@given(data=st.binary(max_size=200), magic=st.booleans(), length=st.integers(0, 2**64 - 1))
def test_random_bytes_after_the_magic_are_value_errors(tmp_path, data, magic, length):
    prefix = MAGIC + struct.pack("<Q", length) if magic else b""
    assert load_or_value_error(tmp_path, prefix + data) is None


@FUZZ
@given(name=st.sampled_from(sorted(SPECS)), data=st.data())
def test_a_damaged_packed_file_given_as_a_fairseq_checkpoint_is_one_value_error(tmp_path, files, name, data):
    """The route fairseq-generate --path takes (fairseq_ext.plugin wraps load_checkpoint_to_cpu)."""
    from fairseq import checkpoint_utils

    import fairseq_ext.plugin  # noqa: F401

    header, payload = files[name]
    raw = bytearray(signed(header, payload))
    edit = data.draw(st.sampled_from(["truncate", "flip", "none"]))
    if edit == "truncate":
        raw = raw[: data.draw(st.integers(len(MAGIC), len(raw) - 1))]
    elif edit == "flip":
        i = data.draw(st.integers(len(MAGIC), len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "model.fxc"
    path.write_bytes(bytes(raw))
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(str(path))
    except ValueError as error:
        assert edit != "none" and "not a valid compressed model file" in str(error)
    else:
        assert edit == "none" and state["optimizer_history"][-1]["num_updates"] == 3


spec_values = {
    "sparsity": st.floats(allow_nan=True) | st.integers(-2, 2) | st.booleans() | st.text(max_size=3) | st.none(),
    "scope": st.sampled_from(["global", "layer", "GLOBAL", "", 1]),
    "prune_embeddings": st.sampled_from([True, False, 0, 1, "yes", None]),
    "bits": st.integers(-2, 40) | st.floats(allow_nan=True) | st.booleans() | st.sampled_from(["4", 4.0]),
    "scheme": st.sampled_from(["symmetric", "asymmetric", "sym", None]),
    "granularity": st.sampled_from(["channel", "tensor", "group", "row", 0]),
    "quantize_embeddings": st.sampled_from([True, False, 1, None]),
    "prune_method": st.sampled_from(["magnitude", "wanda", "sparsegpt", "obs", None]),
    "prune_pattern": st.sampled_from(["unstructured", "2:4", "4:8", None]),
    "quant_method": st.sampled_from(["rtn", "gptq", "awq", None]),
    "group_size": st.integers(-2, 256) | st.floats(allow_nan=True) | st.booleans() | st.none(),
}


@FUZZ
@given(options=st.fixed_dictionaries({}, optional=spec_values),
       extra=st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
def test_any_compression_spec_is_valid_or_one_value_error_naming_the_options(options, extra):
    spec = CompressionSpec(**options)
    problems = spec.problems()
    try:
        spec.validate()
    except ValueError as error:
        assert problems and all(p in str(error) for p in problems)
    else:
        assert not problems and 0 <= spec.sparsity < 1 and spec.bits in (2, 3, 4, 5, 6, 7, 8, 16, 32)
    try:
        CompressionSpec.from_dict({**spec.to_dict(), **extra})
    except ValueError:
        assert problems or set(extra) - set(spec.to_dict())
    else:
        assert not problems


number = st.integers(-5, 200) | st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.none()


@FUZZ
@given(update=st.integers(-10, 10**6), schedule=st.sampled_from(["oneshot", "iterative", "gradual", "cubic", None]),
       target=number, start=number, end=number, every=number, fraction=number, initial=number)
@example(update=0, schedule="oneshot", target=0, start=0, end=0, every=1, fraction=None, initial=None)  # int 0 -> 0.0
def test_any_schedule_is_a_value_error_or_a_sparsity_in_range(update, schedule, target, start, end, every, fraction,
                                                               initial):
    try:
        value = sparsity_at(update, schedule=schedule, target=target, start=start, end=end, every=every,
                            fraction=fraction, initial=initial)
    except ValueError as error:
        assert str(error).startswith("invalid pruning schedule")
    else:
        assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= target < 1
        # pure in the update number: a resumed run gets the same value
        assert value == sparsity_at(update, schedule=schedule, target=target, start=start, end=end, every=every,
                                    fraction=fraction, initial=initial)
