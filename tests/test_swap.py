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
