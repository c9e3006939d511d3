"""The time-share study: attention, FFN and the rest of one forward pass, in time and in MACs."""
import pandas as pd
import pytest
import torch

from vitspeed.studies import time_share as T

pytestmark = pytest.mark.usefixtures("one_thread", "frozen_gc")


def test_parts_add_up_to_the_whole():
    rows = {r["component"]: r for r in T.time_share("deit_tiny_patch16_224", 32, warmup=1, repeats=3)}
    assert set(rows) == {"attention", "ffn", "rest"}
    total = rows["attention"]["total_ms"]
    assert total > 0 and all(r["total_ms"] == total for r in rows.values())
    assert rows["rest"]["median_ms"] == pytest.approx(total - rows["attention"]["median_ms"] - rows["ffn"]["median_ms"])
    assert sum(r["time_share"] for r in rows.values()) == pytest.approx(1.0)
    assert sum(r["macs_share"] for r in rows.values()) == pytest.approx(1.0)
    # attention and FFN were timed in the same rounds and can be compared round by round; rest cannot
    assert rows["attention"]["timing_group"] == rows["ffn"]["timing_group"] is not None
    assert len(rows["attention"]["samples_ms"].split()) == len(rows["ffn"]["samples_ms"].split()) == 3
    assert rows["rest"]["samples_ms"] is None and rows["rest"]["timing_group"] is None
    # DeiT-T at 32 px: 4 patches + the class token; attention and FFN MACs per block from the closed forms
    n, c, blocks = 5, 192, 12
    assert all(r["tokens"] == n for r in rows.values())
    assert rows["ffn"]["macs"] == blocks * 2 * n * c * 4 * c
    assert rows["attention"]["macs"] == blocks * (4 * n * c * c + 2 * n * n * c)


def test_token_count_comes_from_the_model():
    rows = T.time_share("vit_small_patch32_224", 64, warmup=0, repeats=1)
    assert rows[0]["tokens"] == (64 // 32) ** 2 + 1  # not the 16 px patch of DeiT
    swin = T.time_share("swin_tiny_patch4_window7_224", 224, warmup=0, repeats=1)
    assert swin[0]["tokens"] == (224 // 4) ** 2  # Swin's first stage, no class token


def _rows(component, median, iqr, share, macs_share, total=100.0, total_iqr=4.0, size=224):
    return {"model": "m", "img_size": size, "dtype": "float32", "component": component, "median_ms": median,
            "iqr_ms": iqr, "total_ms": total, "total_iqr_ms": total_iqr, "time_share": share,
            "macs_share": macs_share}


def test_rest_spread_adds_the_three_iqrs_in_quadrature():
    import pandas as pd

    df = pd.DataFrame([_rows("attention", 40, 3.0, 0.40, 0.38), _rows("ffn", 50, 12.0, 0.50, 0.60),
                       _rows("rest", 10, float("nan"), 0.10, 0.02)])
    out = T.with_spread(df).set_index("component")
    assert out.loc["attention", "spread_ms"] == 3.0 and out.loc["ffn", "spread_ms"] == 12.0
    assert out.loc["rest", "spread_ms"] == pytest.approx(13.0)  # sqrt(3^2 + 12^2 + 4^2)
    assert out.loc["rest", "spread_pct"] == pytest.approx(13.0)
    gaps = T.share_gaps(df)
    assert gaps.loc["attention", "max_pp"] == pytest.approx(2.0)
    assert gaps.loc["ffn", "max_pp"] == pytest.approx(10.0) and gaps.loc["rest", "max_pp"] == pytest.approx(8.0)


def test_attention_core_macs_are_the_two_sequence_products_of_every_block():
    from vitspeed.studies.time_share import attention_core_macs
    # DeiT-S: 12 blocks, 197 tokens, C = 384: QK^T and AV each N^2 C
    assert attention_core_macs("deit_small_patch16_224", 224) == 12 * 2 * 197 ** 2 * 384
    # Swin-T: 7x7 windows; stage s has (56 / 2^s)^2 tokens of 96 * 2^s channels, depths 2, 2, 6, 2
    swin = sum(d * 2 * 49 * (56 // 2 ** s) ** 2 * 96 * 2 ** s for s, d in enumerate([2, 2, 6, 2]))
    assert attention_core_macs("swin_tiny_patch4_window7_224", 224) == swin


def test_component_calls_are_recorded_once_per_block_and_replay_alone():
    from vitspeed.models import create_model

    model = create_model("deit_tiny_patch16_224", img_size=32)
    attn, ffn = T.record_component_inputs(model, torch.randn(1, 3, 32, 32))
    assert len(attn) == len(ffn) == 12
    assert [m for m, _, _ in attn] == [b.attn for b in model.blocks]
    # each recorded input is the block's normalised tokens: (batch, 5 tokens, 192 channels)
    assert all(args[0].shape == (1, 5, 192) for _, args, _ in attn + ffn)
    with pytest.raises(ValueError, match="no '.attn' / '.mlp' blocks"):
        T.record_component_inputs(torch.nn.Sequential(torch.nn.Linear(4, 4)), torch.randn(1, 4))


def test_sweep_writes_one_row_per_component_and_resumes(results_dir, monkeypatch):
    kw = dict(models=["deit_tiny_patch16_224"], img_sizes=[32, 64], warmup=0, repeats=1, run_id="ts")
    first = T.run_time_share(**kw)
    assert len(first) == 2 * 3 and list(first.component[:3]) == ["attention", "ffn", "rest"]
    assert sorted(set(first.img_size)) == [32, 64] and set(first.dtype) == {"float32"}

    def measured_again(*args, **kwargs):
        raise AssertionError("a finished configuration was measured again")

    monkeypatch.setattr(T, "time_share", measured_again)
    again = T.run_time_share(**kw)  # the same run id: nothing measured again, the same rows back
    assert len(again) == len(first)
    assert list(again.median_ms) == pytest.approx(list(first.median_ms))


def test_other_hardware_text_states_attentions_share_on_each_other_hardware():
    from vitspeed.studies.time_share import other_hardware_text

    rows = []
    for hw, shares in [("here", (0.3, 0.5)), ("gpu", (0.338, 0.811))]:
        for img, share, macs in [(224, shares[0], 0.38), (1120, shares[1], 0.783)]:
            rows.append({"hardware": hw, "dtype": "float32", "model": "deit_small_patch16_224", "img_size": img,
                         "component": "attention", "time_share": share, "macs_share": macs})
            rows.append({"hardware": hw, "dtype": "float32", "model": "deit_small_patch16_224", "img_size": img,
                         "component": "ffn", "time_share": 0.2, "macs_share": 0.5})
    df = pd.DataFrame(rows)
    assert other_hardware_text(df, "here") == (
        "Measured elsewhere: on gpu in float32, attention takes 33.8% of DeiT-S's time at 224 px (MACs share 38.0%) "
        "and 81.1% at 1120 px (78.3%).")
    assert other_hardware_text(df[df.hardware == "here"], "here") == ""
    assert other_hardware_text(df.drop(columns="macs_share"), "here") == ""
