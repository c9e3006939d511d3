"""The time-share study: attention, FFN and the rest of one forward pass, in time and in MACs."""
import pytest

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
