"""The attention registry: names, options, errors."""
import pytest

from vitspeed.attention import build_core, get_attention, list_attentions, validate_options

EXPECTED = [
    "softmax", "softmax_explicit", "cosine", "euclidean", "jaccard",
    "linear_relu", "linear_elu", "linear_cosine", "linear_mean", "linear_sigmoid_softmax",
    "linear_angular", "taylor1", "efficient", "focused",
    "taylor2_full", "taylor2_compact", "taylor2_pool", "taylor2_chunk", "taylor2_random",
    "hallucinated",
]


def test_every_variant_of_the_study_is_registered():
    assert set(EXPECTED) <= set(list_attentions())


def test_quadratic_family_takes_a_bias_and_linear_does_not():
    for name in list_attentions("quadratic"):
        assert get_attention(name).supports_bias
    for name in list_attentions("linear"):
        assert not get_attention(name).supports_bias


def test_every_variant_has_a_formula_summary_and_paper():
    for name in list_attentions():
        spec = get_attention(name)
        assert spec.formula is not None, name
        assert spec.summary and spec.paper, name


def test_unknown_variant_names_the_valid_choices():
    with pytest.raises(ValueError, match="valid choices: .*softmax"):
        get_attention("sofmax")


def test_unknown_option_names_the_valid_options():
    with pytest.raises(ValueError, match="unknown option.*valid options: fused"):
        build_core("softmax", head_dim=8, num_heads=2, window=3)


def test_string_options_from_the_cli_are_coerced_to_the_default_type():
    spec = get_attention("softmax")
    assert validate_options(spec, {"fused": "false"}) == {"fused": False}
    with pytest.raises(ValueError, match=r"fused='maybe' of attention 'softmax' must be true or false \(also 1/0"):
        validate_options(spec, {"fused": "maybe"})
    with pytest.raises(ValueError, match="p='x' of attention 'focused' must be a number"):
        validate_options(get_attention("focused"), {"p": "x"})
    with pytest.raises(ValueError, match="kernel_size='3.5' of attention 'focused' must be an integer"):
        validate_options(get_attention("focused"), {"kernel_size": "3.5"})


@pytest.mark.parametrize("name, options, match", [
    ("linear_relu", {"eps": "-1"}, "eps=-1.0 of attention 'linear_relu' must be >= 0"),
    ("linear_elu", {"eps": "nan"}, "eps=nan of attention 'linear_elu' must be a finite number"),
    ("taylor2_compact", {"alpha": "nan"}, "alpha=nan of attention 'taylor2_compact' must be a finite number"),
    ("hallucinated", {"ratio": float("inf")}, "ratio=inf of attention 'hallucinated' must be a finite number"),
])
def test_number_options_must_be_finite_and_eps_not_negative(name, options, match):
    with pytest.raises(ValueError, match=match):
        validate_options(get_attention(name), options)
