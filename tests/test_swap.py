"""Swapping our modules into timm models reproduces the stock models with the same weights."""
import copy

import pytest
import timm
import torch

from vitspeed.models import create_model
from vitspeed.models.swap import swap_swin_attention, swap_vit_attention


@pytest.fixture(scope="module")
def image():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", ["softmax", "softmax_explicit"])
def test_vit_swap_equals_stock_deit(variant, image):
    torch.manual_seed(0)
    stock = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    swapped = swap_vit_attention(copy.deepcopy(stock), variant)
    assert all(type(b.attn).__name__ == "GlobalAttention" for b in swapped.blocks)
    with torch.inference_mode():
        torch.testing.assert_close(swapped(image), stock(image), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant", ["softmax", "softmax_explicit"])
def test_swin_swap_equals_stock_swin_with_bias_and_shift_mask(variant, image):
    torch.manual_seed(0)
    stock = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    swapped = swap_swin_attention(copy.deepcopy(stock), variant)
    # the shifted blocks really pass a mask, so the equality covers the -100 mask path
    assert any(blk.shift_size != (0, 0) and blk.shift_size != 0 for s in swapped.layers for blk in s.blocks)
    with torch.inference_mode():
        torch.testing.assert_close(swapped(image), stock(image), rtol=1e-4, atol=1e-5)


def test_other_similarities_change_the_output(image):
    torch.manual_seed(0)
    stock = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    swapped = swap_vit_attention(copy.deepcopy(stock), "euclidean")
    with torch.inference_mode():
        assert not torch.allclose(swapped(image), stock(image), atol=1e-4)


def test_linear_variant_in_swin_becomes_global_attention():
    model = create_model("swin_tiny_patch4_window7_224", attention="linear_relu")
    first = model.layers[0].blocks[1]
    assert tuple(first.attn.window_size) == (56, 56)
    with torch.inference_mode():
        assert torch.isfinite(model(torch.randn(1, 3, 224, 224))).all()


@pytest.mark.parametrize("name,size,match", [
    ("deit_small_patch16_224", 230, "not divisible by the patch size 16"),
    ("swin_tiny_patch4_window7_224", 256, "multiples of 224"),
    ("no_such_model", 224, "unknown model"),
])
def test_bad_model_or_size_is_a_clear_error(name, size, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, img_size=size)


def test_unknown_attention_in_create_model_lists_choices():
    with pytest.raises(ValueError, match="valid choices"):
        create_model("deit_tiny_patch16_224", attention="nope")


@pytest.mark.parametrize("kwargs,match", [
    ({"attention_options": {"p": 3}}, r"attention options \['p'\] given without an attention to swap into"),
    ({"ffn_options": {"rank": 4}}, r"FFN options \['rank'\] given without an FFN to swap into"),
])
def test_options_without_the_variant_they_belong_to_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("deit_tiny_patch16_224", img_size=32, **kwargs)


@pytest.mark.parametrize("name", ["levit_128s", "efficientvit_b1"])
def test_swaps_into_convolutional_hybrids_are_refused_naming_the_swappable_families(name):
    with pytest.raises(ValueError, match="swappable families: DeiT/ViT .* and Swin"):
        create_model(name, attention="linear_relu")
    with pytest.raises(ValueError, match="is not supported"):
        create_model(name, ffn="cffn")


def test_ffn_swap_reaches_every_block_of_every_stage():
    from vitspeed.ffn import CompactFFN

    deit = create_model("deit_tiny_patch16_224", img_size=32, ffn="cffn", ffn_options={"rank": 8})
    assert len(deit.blocks) == 12 and all(isinstance(b.mlp, CompactFFN) and b.mlp.rank == 8 for b in deit.blocks)
    swin = create_model("swin_tiny_patch4_window7_224", ffn="cffn")
    blocks = [b for stage in swin.layers for b in stage.blocks]
    assert len(blocks) == 2 + 2 + 6 + 2 and all(isinstance(b.mlp, CompactFFN) for b in blocks)
    # the FFN keeps its block's widths: Swin-T's last stage is 768 wide, its hidden layer 4 x 768
    assert blocks[-1].mlp.fc1.in_features == 768 and blocks[-1].mlp.fc1.out_features == 3072
    with torch.inference_mode():
        assert deit(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_model_families_and_specs():
    from vitspeed.models.registry import get_model_spec, register_model, timm_family

    assert timm_family("vit_base_patch16_384") == "vit" and timm_family("swin_tiny_patch4_window7_224") == "swin"
    assert timm_family("levit_384") == "levit" and timm_family("resnet50") is None
    assert get_model_spec("vit_base_patch16_384") is None  # a timm name: built by timm, not a composite
    assert get_model_spec("hdeit_tiny").family and get_model_spec("hdeit_tiny").name == "hdeit_tiny"
    with pytest.raises(ValueError, match="unknown model 'resnet50'; valid choices: deit_tiny_patch16_224"):
        get_model_spec("resnet50")
    with pytest.raises(ValueError, match="model 'hdeit_tiny' is registered twice"):
        register_model("hdeit_tiny", "again", "vit")(lambda **kw: None)
