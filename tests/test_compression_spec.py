"""CompressionSpec validation: every problem of a spec in one ValueError, naming options and allowed values."""

import pytest

from fairseq_ext.compression import CompressionSpec


def test_default_spec_is_valid_and_does_nothing():
    spec = CompressionSpec()
    spec.validate()
    assert (spec.prunes, spec.quantizes, spec.enabled) == (False, False, False)


@pytest.mark.parametrize(
    "options, prunes, quantizes",
    [({"sparsity": 0.5}, True, False), ({"bits": 4}, False, True), ({"bits": 16}, False, False),
     ({"sparsity": 0.9, "bits": 2}, True, True)],
)
def test_properties(options, prunes, quantizes):
    spec = CompressionSpec(**options)
    spec.validate()
    assert (spec.prunes, spec.quantizes, spec.enabled) == (prunes, quantizes, prunes or quantizes)


def test_all_problems_are_reported_together():
    spec = CompressionSpec(sparsity=1.0, scope="row", bits=1, scheme="affine", granularity="group", prune_embeddings=1)
    with pytest.raises(ValueError) as error:
        spec.validate()
    message = str(error.value)
    assert "6 problems" in message
    for fragment in [
        "sparsity=1.0: must be a number in [0, 1)",
        "scope='row': allowed values are 'global', 'layer'",
        "bits=1: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32",
        "scheme='affine': allowed values are 'symmetric', 'asymmetric'",
        "granularity='group': allowed values are 'channel', 'tensor'",
        "prune_embeddings=1: allowed values are False, True",
    ]:
        assert fragment in message


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", True])
def test_sparsity_outside_unit_interval_is_rejected(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        CompressionSpec(sparsity=sparsity).validate()


@pytest.mark.parametrize("bits", [0, 1, 9, 12, 64, 4.0, True])
def test_unsupported_bits_are_rejected(bits):
    with pytest.raises(ValueError, match="bits"):
        CompressionSpec(bits=bits).validate()


def test_dict_round_trip_and_unknown_keys():
    spec = CompressionSpec(sparsity=0.25, scope="layer", bits=3, scheme="asymmetric", granularity="tensor")
    assert CompressionSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="(?s)unknown option 'colour'.*missing option 'bits'"):
        CompressionSpec.from_dict({**{k: v for k, v in spec.to_dict().items() if k != "bits"}, "colour": 1})
    with pytest.raises(ValueError, match="bits=9"):
        CompressionSpec.from_dict({**spec.to_dict(), "bits": 9})
