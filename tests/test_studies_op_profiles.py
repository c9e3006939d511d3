"""vitspeed.studies.op_profiles: loading the newest run per call, category shares over rounds, product
rates, the convolution yardstick and the sentences the Taylor and hybrids chapters print."""
import pandas as pd
import pytest

from vitspeed.results import ResultsWriter
from vitspeed.studies import op_profiles as OP

HW = "cpu-test-2t"


def _rows(target, ms, kind="model", batch_size=1, rnd=0, tokens=""):
    """Rows of one profiled call; ``ms`` maps operator -> (category, ms per pass, macs)."""
    total = sum(v[1] for v in ms.values())
    out = []
    for op, (cat, t, macs) in ms.items():
        out.append({"hardware": HW, "kind": kind, "target": target, "attention": "", "dtype": "float32",
                    "tokens": tokens, "img_size": 224 if kind == "model" else "", "batch_size": batch_size,
                    "threads": 2, "round": rnd, "operator": op, "category": cat, "ms_per_pass": t,
                    "share_pct": 100.0 * t / total, "macs": macs, "elementwise": 0,
                    "gmacs_per_s": macs / (t * 1e6) if macs else float("nan"), "profiled_ms_per_pass": total})
    return out


def _models(extra_free=2.0, conv_ms=(10.0, 20.0)):
    """EfficientViT-like base and a QT-ViT-like model with the same convolutions plus ``extra_free`` ms
    of copies per 10 ms of convolution, in two rounds whose machine speed differs by ``conv_ms``."""
    rows = []
    for rnd, conv in enumerate(conv_ms):
        k = conv / 10.0  # the whole machine runs k times slower in this round
        rows += _rows("base", {"aten::conv2d": ("products", conv, 1000), "aten::matmul": ("products", 1.0 * k, 10),
                               "aten::cat": ("data movement", 1.0 * k, 0)}, rnd=rnd)
        rows += _rows("qt", {"aten::conv2d": ("products", conv, 1000), "aten::matmul": ("products", 2.0 * k, 20),
                             "aten::cat": ("data movement", (1.0 + extra_free) * k, 0),
                             "aten::mul": ("elementwise", 0.5 * k, 0)}, rnd=rnd)
    return pd.DataFrame(rows)


def test_load_takes_each_call_from_its_newest_run(tmp_path):
    env = {"device_type": "cpu", "cpu_model": "Test", "threads": 2, "dtype": "float32"}
    for run, ms in (("20260101-000000", 5.0), ("20260102-000000", 7.0)):
        w = ResultsWriter(OP.CHAPTER, env, run_id=run, root=tmp_path)
        w.extend(_rows("softmax", {"aten::matmul": ("products", ms, 100)}, kind="core", tokens=64))
    w = ResultsWriter(OP.CHAPTER, env, run_id="20260101-000000x", root=tmp_path)  # another call, older run
    w.extend(_rows("taylor2_compact", {"aten::cat": ("data movement", 1.0, 0)}, kind="core", tokens=64))
    ops = OP.load_op_profiles(roots=[tmp_path])
    soft = ops[ops.target == "softmax"]
    assert list(soft.ms_per_pass) == [7.0] and set(ops.target) == {"softmax", "taylor2_compact"}
    assert ops.batch_size.dtype.kind == "i" and ops["round"].dtype.kind == "i"
    assert OP.load_op_profiles(hardware="nope", roots=[tmp_path]).empty


def test_category_table_gives_median_and_range_over_rounds():
    ops = pd.DataFrame(_rows("m", {"aten::conv2d": ("products", 6.0, 10), "aten::cat": ("data movement", 4.0, 0)})
                       + _rows("m", {"aten::conv2d": ("products", 8.0, 10), "aten::cat": ("data movement", 2.0, 0)},
                               rnd=1)
                       + _rows("m", {"aten::conv2d": ("products", 7.0, 10), "aten::cat": ("data movement", 3.0, 0),
                                     "aten::promote_types": ("other", 0.001, 0)}, rnd=2))
    t = OP.category_table(ops)
    row = t.iloc[0]
    assert row["products"] == "70 (60-80)" and row["data movement"] == "30 (20-40)"
    assert "other" not in t.columns  # never half a percent
    assert row["ms per pass"] == pytest.approx(10.0, abs=0.01) and row["rounds"] == 3


def test_product_rates_are_medians_with_mac_and_time_shares():
    r = OP.product_rates(_models()).set_index(["target", "operator"])
    assert r.loc[("qt", "aten::conv2d"), "macs_pct"] == pytest.approx(100 * 1000 / 1020)
    # conv: 1000 MACs in 10 ms and in 20 ms -> 1e-4 and 5e-5 GMAC/s, median 7.5e-5
    assert r.loc[("qt", "aten::conv2d"), "gmacs_per_s"] == pytest.approx(7.5e-5)
    assert ("qt", "aten::cat") not in r.index


def test_per_conv_ms_does_not_move_with_the_machines_speed():
    per = OP.per_conv_ms(_models(), "qt", 1)
    assert per["data movement"] == pytest.approx(0.3) and per["products"] == pytest.approx(0.2)
    assert per["elementwise"] == pytest.approx(0.05)
    assert OP.per_conv_ms(_models(), "qt", 8) is None


def test_qtvit_text_predicts_the_ratio_and_finds_the_extra_in_operators_without_macs():
    text = OP.qtvit_text(_models(extra_free=2.0), "qt", "base", {"qt": "QT", "base": "Base"}, [1, 8])
    # per ms of convolution: QT 0.2 + 0.3 + 0.05 = 0.55, Base 0.1 + 0.1 = 0.2 -> 1.55 / 1.2 = 1.29
    assert "QT runs 0.55 ms of other operators, Base 0.20 ms" in text
    assert "predicts 1.29 times Base's time" in text
    # extra 0.35: copies +0.2, elementwise +0.05 -> 71% without MACs
    assert "71% is in operators that do no MACs" in text
    assert "batch 1," in text and "batch 8" not in text
    assert OP.qtvit_text(_models(), "qt", "base", {}, [8]) is None
    assert OP.qtvit_text(pd.DataFrame(), "qt", "base", {}, [1]) is None


def test_qtvit_text_says_so_when_the_profile_shows_no_extra_time():
    same = _models(extra_free=0.0)
    same = same[~((same.target == "qt") & same.operator.isin(["aten::mul"]))]
    same.loc[(same.target == "qt") & (same.operator == "aten::matmul"), "ms_per_pass"] /= 2
    text = OP.qtvit_text(same, "qt", "base", {}, [1])
    assert "does not show extra operator time" in text and "predicts 1.00 times" in text


def test_taylor_text_lists_products_and_copies_per_core():
    rows = (_rows("taylor2_compact", {"aten::matmul": ("products", 5.0, 100), "aten::cat": ("data movement", 3.0, 0),
                                      "aten::mul": ("elementwise", 2.0, 0)}, kind="core", tokens=3136)
            + _rows("taylor2_random", {"aten::matmul": ("products", 2.0, 100),
                                       "aten::index_select": ("data movement", 3.0, 0),
                                       "aten::pad": ("data movement", 5.0, 0)}, kind="core", tokens=3136))
    text = OP.taylor_text(pd.DataFrame(rows), {"taylor2_compact": "compact", "taylor2_random": "random"})
    assert "at N = 3136" in text
    assert "products take compact 50%, random 20%" in text
    assert "elementwise passes (the squares, outer products and means that form the features, the final " \
           "division) compact 20%, random 0%" in text
    assert "(concatenations, pads, gathers) compact 30%, random 80%" in text
    assert "gathers (index_select) alone take 30%" in text
    assert OP.taylor_text(pd.DataFrame(rows[3:]), {}) is None  # no compact core


def test_empty_inputs_give_empty_tables():
    assert OP.category_table(pd.DataFrame()).empty
    assert OP.product_rates(pd.DataFrame()).empty
    assert OP.category_ms(pd.DataFrame()).empty
