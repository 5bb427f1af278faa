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
    spec = CompressionSpec(sparsity=1.0, scope="row", bits=1, scheme="affine", granularity="row", prune_embeddings=1)
    with pytest.raises(ValueError) as error:
        spec.validate()
    message = str(error.value)
    assert "6 problems" in message
    for fragment in [
        "sparsity=1.0: must be a number in [0, 1)",
        "scope='row': allowed values are 'global', 'layer'",
        "bits=1: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32",
        "scheme='affine': allowed values are 'symmetric', 'asymmetric'",
        "granularity='row': allowed values are 'channel', 'tensor', 'group'",
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


OLD_SPEC = {"sparsity": 0.5, "scope": "layer", "prune_embeddings": False, "bits": 4, "scheme": "asymmetric",
            "granularity": "tensor", "quantize_embeddings": True}  # a spec written before the calibrated methods


def test_a_spec_written_before_the_new_options_reads_with_their_defaults():
    spec = CompressionSpec.from_dict(OLD_SPEC)
    assert spec == CompressionSpec(sparsity=0.5, scope="layer", bits=4, scheme="asymmetric", granularity="tensor")
    assert (spec.prune_method, spec.prune_pattern, spec.quant_method, spec.group_size) == ("magnitude", "unstructured",
                                                                                          "rtn", 0)
    with pytest.raises(ValueError, match="(?s)1 problem\\).*missing option 'scope'"):
        CompressionSpec.from_dict({k: v for k, v in OLD_SPEC.items() if k != "scope"})
    with pytest.raises(ValueError, match="prune_pattern '2:4' needs sparsity 0.5 \\(got 0.25\\)"):
        CompressionSpec.from_dict({**OLD_SPEC, "sparsity": 0.25, "prune_pattern": "2:4"})


@pytest.mark.parametrize("options, calibrated", [
    ({}, False),
    ({"sparsity": 0.5, "bits": 4, "granularity": "group", "group_size": 128}, False),
    ({"sparsity": 0.5, "prune_method": "wanda"}, True),
    ({"sparsity": 0.5, "prune_method": "sparsegpt", "bits": 4}, True),
    ({"sparsity": 0.5, "prune_pattern": "2:4"}, True),  # magnitude 2:4 masks come from the calibrated compressors too
    ({"prune_method": "wanda"}, False),  # nothing pruned
    ({"bits": 4, "quant_method": "gptq"}, True),
    ({"bits": 3, "quant_method": "gptq", "granularity": "group", "group_size": 64}, True),
])
def test_calibrated_is_true_exactly_when_a_calibrated_method_acts(options, calibrated):
    spec = CompressionSpec(**options)
    spec.validate()
    assert spec.calibrated is calibrated


@pytest.mark.parametrize("options, problem", [
    ({"prune_method": "obs"}, "prune_method='obs': allowed values are 'magnitude', 'wanda', 'sparsegpt'"),
    ({"prune_pattern": "4:8"}, "prune_pattern='4:8': allowed values are 'unstructured', '2:4'"),
    ({"quant_method": "awq"}, "quant_method='awq': allowed values are 'rtn', 'gptq'"),
    ({"sparsity": 0.6, "prune_pattern": "2:4"}, "prune_pattern '2:4' needs sparsity 0.5 (got 0.6)"),
    ({"prune_pattern": "2:4"}, "prune_pattern '2:4' needs sparsity 0.5 (got 0.0)"),
    ({"quant_method": "gptq"}, "quant_method 'gptq' needs bits 2..8 (got 32)"),
    ({"quant_method": "gptq", "bits": 16}, "quant_method 'gptq' needs bits 2..8 (got 16)"),
    ({"bits": 4, "granularity": "group"}, "granularity 'group' needs group_size >= 1, an integer (got 0)"),
    ({"granularity": "group", "group_size": -8}, "granularity 'group' needs group_size >= 1, an integer (got -8)"),
    ({"granularity": "group", "group_size": 4.0}, "granularity 'group' needs group_size >= 1, an integer (got 4.0)"),
    ({"granularity": "group", "group_size": True}, "granularity 'group' needs group_size >= 1, an integer (got True)"),
    ({"bits": 4, "group_size": 64},
     "group_size 64 applies only to granularity 'group' (got granularity 'channel'); 0 leaves it unset"),
    ({"granularity": "tensor", "group_size": "64"},
     "group_size '64' applies only to granularity 'group' (got granularity 'tensor'); 0 leaves it unset"),
])
def test_each_new_option_problem_has_its_message(options, problem):
    assert CompressionSpec(**options).problems() == [problem]
    with pytest.raises(ValueError, match="1 problem\\)"):
        CompressionSpec(**options).validate()


def test_problems_can_name_the_options_as_a_front_end_spells_them():
    spec = CompressionSpec(sparsity=0.3, prune_pattern="2:4", bits=12, granularity="group")
    flags = {"sparsity": "--prune-sparsity", "prune_pattern": "--prune-pattern", "bits": "--quant-bits",
             "granularity": "--quant-granularity", "group_size": "--quant-group-size"}
    assert spec.problems(flags) == [
        "--quant-bits=12: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32",
        "--quant-granularity 'group' needs --quant-group-size >= 1, an integer (got 0)",
        "--prune-pattern '2:4' needs --prune-sparsity 0.5 (got 0.3)",
    ]
    assert spec.problems() == [
        "bits=12: allowed values are 2, 3, 4, 5, 6, 7, 8, 16, 32",
        "granularity 'group' needs group_size >= 1, an integer (got 0)",
        "prune_pattern '2:4' needs sparsity 0.5 (got 0.3)",
    ]
