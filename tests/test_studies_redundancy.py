"""Tests of the redundancy chapter's study module (hMHSA + cFFN on DeiT): tiny images, CPU."""
import math

import pandas as pd
import pytest

from vitspeed.results import read_results
from vitspeed.studies import redundancy as R

TINY = "deit_tiny_patch16_224"


pytestmark = pytest.mark.usefixtures("one_thread", "frozen_gc")


def test_ratio_matches_hvit_split():
    assert R.hmhsa_ratio(6) == 0.5
    assert R.hmhsa_ratio(3) == pytest.approx(2 / 3)
    assert round(R.hmhsa_ratio(3) * 3) == 2


def test_candidates_are_the_four_variants():
    cands = R.redundancy_candidates(TINY)
    assert [c["variant"] for c in cands] == ["stock", "hmhsa", "cffn", "hmhsa+cffn"]
    assert cands[1]["attention"] == "hallucinated" and cands[1]["options"] == {"ratio": pytest.approx(2 / 3)}
    assert cands[2]["ffn"] == "cffn" and callable(cands[2]["prepare"])  # merged before counting/timing
    assert cands[3]["model"] == "hdeit_tiny"
    with pytest.raises(ValueError, match="valid choices"):
        R.redundancy_candidates("resnet50")


def test_counted_savings_equal_closed_form_and_merged_cffn_is_cheaper():
    df = R.counted_savings([TINY], img_size=32)
    assert list(df.variant) == ["stock", "hmhsa", "cffn", "hmhsa+cffn"]
    assert df.exact.all(), df
    saved = df.set_index("variant").macs_saved
    assert (saved.drop("stock") > 0).all()  # merged cFFN saves; the unmerged training form would cost more
    assert saved["hmhsa+cffn"] == saved["hmhsa"] + saved["cffn"]


def test_predicted_savings_deit_small_matches_docstring():
    pred = {p["variant"]: p for p in R.predicted_savings("deit_small_patch16_224")}
    C, N, L = 384, 197, 12
    # ffn: H C - r (H + C) with H = 4C, r = C/2 -> 1.5 C^2 per token
    assert pred["cffn"]["macs_saved"] == L * N * (4 * C * C - (C // 2) * 5 * C)
    # attention: N C^2 + N^2 C / 2 - N^2 h^2 / 4 per block (module docstring)
    assert pred["hmhsa"]["macs_saved"] == L * (N * C * C + N * N * C // 2 - N * N * 36 // 4)


def test_compare_and_run_write_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    df = R.run_redundancy([TINY], img_sizes=[32], batch_sizes=[1, 2], warmup=0, repeats=1, run_id="t1")
    assert len(df) == 8
    for col in ["label", "variant", "median_ms", "iqr_ms", "throughput", "gmacs", "params_m", "peak_mem_mb",
                "macs_saved_pct", "params_saved_pct", "latency_saved_pct", "speedup", "status", "tokens"]:
        assert col in df.columns, col
    assert (df.status == "ok").all()
    stock = df[df.variant == "stock"]
    assert (stock.latency_saved_pct == 0).all() and (stock.macs_saved_pct == 0).all()
    assert set(df.tokens) == {5}
    # resuming the same run id measures nothing again
    again = R.run_redundancy([TINY], img_sizes=[32], batch_sizes=[1, 2], warmup=0, repeats=1, run_id="t1")
    assert len(again) == 8
    stored = read_results("redundancy", roots=[tmp_path])
    assert len(stored) == 8 and not math.isnan(stored.median_ms.iloc[0])


def test_oom_of_a_candidate_is_recorded(oom_on_call):
    oom_on_call(2)  # the second candidate (hMHSA) runs out of memory
    rows = R.compare_redundancy(TINY, img_size=32, warmup=0, repeats=1)
    status = pd.Series([r["status"] for r in rows])
    assert list(status) == ["ok", "oom", "ok", "ok"]
    assert math.isnan(rows[1]["latency_saved_pct"]) and rows[1]["macs_saved_pct"] > 0


def test_interpretation_quotes_both_modules():
    text = R.interpretation()
    assert "OUR INTERPRETATION" in text and "AFTER" in text
    assert "cFFN" in text and "rank-r" in text


def _share_rows(shares):
    return pd.DataFrame([{"base_label": b, "variant": v, "batch_size": n, "status": "ok",
                          "macs_saved_pct": 10.0, "latency_saved_pct": 10.0 * s}
                         for (b, v, n), s in shares.items()]
                        + [{"base_label": b, "variant": "stock", "batch_size": 1, "status": "ok",
                            "macs_saved_pct": 0.0, "latency_saved_pct": 0.0} for b in {k[0] for k in shares}])


def test_conversion_is_latency_saved_over_macs_saved_without_stock_rows():
    share = R.conversion(_share_rows({("DeiT-S", "hmhsa", 1): 0.5, ("DeiT-S", "cffn", 1): 0.8}))
    assert share[("DeiT-S", "hmhsa", 1)] == pytest.approx(0.5)
    assert share[("DeiT-S", "cffn", 1)] == pytest.approx(0.8)
    assert "stock" not in share.index.get_level_values(1)


def test_conversion_words_compare_with_cffn_per_batch_and_hedge_the_cause():
    share = R.conversion(_share_rows({
        ("DeiT-S", "hmhsa", 1): 0.54, ("DeiT-S", "cffn", 1): 0.69, ("DeiT-S", "hmhsa", 8): 0.88,
        ("DeiT-S", "cffn", 8): 0.85, ("DeiT-T", "hmhsa", 1): 0.42, ("DeiT-T", "cffn", 1): 0.79,
        ("DeiT-T", "hmhsa", 8): 0.68, ("DeiT-T", "cffn", 8): 0.82}))
    text = R.conversion_words(share)
    assert text.startswith("hMHSA turns 54% (batch 1) and 88% (batch 8) of its MACs saving into time on DeiT-S, "
                           "42% and 68% on DeiT-T.")
    assert "At batch 1 that is less than cFFN on both models" in text
    assert "at batch 8 about as much as cFFN on DeiT-S and less than cFFN on DeiT-T" in text
    assert "fits, but does not prove" in text
    # a share that does not grow with the batch gets no per-call-overhead story
    flat = R.conversion(_share_rows({("DeiT-S", "hmhsa", 1): 0.9, ("DeiT-S", "cffn", 1): 0.5,
                                              ("DeiT-S", "hmhsa", 8): 0.9, ("DeiT-S", "cffn", 8): 0.5}))
    words = R.conversion_words(flat)
    assert "more than cFFN" in words and "fits" not in words and "no run here profiles them" in words


def test_other_hardware_text_gives_hdeit_against_its_base_per_batch():
    from vitspeed.studies.redundancy import other_hardware_text

    rows = []
    for hw, (stock, both) in {"here": (10.0, 9.0), "cuda-x": (4.0, 6.0)}.items():
        for b, scale in [(1, 1.0), (64, 8.0)]:
            for variant, t in [("stock", stock), ("hmhsa+cffn", both if b == 1 else stock * 0.97)]:
                for img in (224, 384):
                    rows.append({"hardware": hw, "dtype": "float32", "base_label": "DeiT-S", "variant": variant,
                                 "img_size": img, "batch_size": b, "median_ms": t * scale * (img / 224),
                                 "status": "ok"})
    df = pd.DataFrame(rows)
    assert other_hardware_text(df, "here") == (
        "Measured elsewhere: on cuda-x in float32 at 224 px, hDeiT-S (hMHSA + cFFN) takes 1.50 times DeiT-S's time "
        "at batch 1 and 0.97 times at batch 64.")
    assert other_hardware_text(df[df.hardware == "here"], "here") == ""
