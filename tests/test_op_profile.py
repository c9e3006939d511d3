"""vitspeed.op_profile: operator naming and categories, the timer's top-level attribution, bad input,
and an end-to-end operator profile of a model written to the results store."""
import json
import pandas as pd
import pytest

from vitspeed import op_profile
from vitspeed.cli import main
from vitspeed.flops import model_flops


def test_count_name_maps_eager_convolutions_to_the_counters_name():
    assert op_profile.count_name("aten::conv2d") == "conv"
    assert op_profile.count_name("aten::_convolution") == "conv"
    assert op_profile.count_name("aten::matmul") == "matmul"
    assert op_profile.count_name("aten::hardswish_") == "hardswish_"


@pytest.mark.parametrize("op,macs,elementwise,category", [
    ("aten::conv2d", 10, 0, "products"),
    ("aten::matmul", 5, 0, "products"),
    ("aten::batch_norm", 7, 0, "normalization"),
    ("aten::layer_norm", 0, 0, "normalization"),  # a norm whatever its count
    ("aten::mul", 0, 3, "elementwise"),
    ("aten::cat", 0, 0, "data movement"),
    ("aten::pad", 0, 0, "data movement"),
    ("aten::index_select", 0, 0, "data movement"),
    ("aten::promote_types", 0, 0, "other"),
])
def test_operator_category(op, macs, elementwise, category):
    assert op_profile.operator_category(op, macs, elementwise) == category
    assert category in op_profile.CATEGORIES


def test_operator_timer_times_top_level_operators_once():
    import torch
    import torch.nn.functional as F

    x, w = torch.randn(8, 4), torch.randn(3, 4)
    timer = op_profile.OperatorTimer()
    with torch.inference_mode(), timer:
        F.linear(x, w)  # runs aten::addmm (or mm) inside: charged to aten::linear only
        F.linear(x, w)
        torch.cat([x, x])
    assert set(timer.times) == {"aten::linear", "aten::cat"}
    assert timer.times["aten::linear"]["calls"] == 2 and timer.times["aten::cat"]["calls"] == 1
    assert all(t["us"] > 0 for t in timer.times.values())
    with torch.inference_mode():
        F.linear(x, w)  # the mode is off again
    assert timer.times["aten::linear"]["calls"] == 2


@pytest.mark.parametrize("config,rounds,match", [
    ({"kind": "core", "target": "softmax", "tokens": 64, "compiled": True}, 1, "eager"),
    ({"kind": "core", "target": "nope", "tokens": 64}, 1, "valid"),
    ({"kind": "model", "target": "not_a_model"}, 1, "unknown model"),
    ({"kind": "core", "target": "softmax", "tokens": 64}, 0, "rounds"),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path, config, rounds, match):
    with pytest.raises(ValueError, match=match):
        op_profile.op_profile_many([config], rounds=rounds, root=tmp_path)
    assert not (tmp_path / op_profile.CHAPTER).exists()


def test_cli_refuses_a_compiled_operator_profile_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    assert main(["profile", "core", "softmax", "--by", "operator", "--tokens", "64", "--modes", "compiled"]) == 2
    assert "eager" in capsys.readouterr().err
    assert main(["profile", "core", "softmax", "--tokens", "64", "--rounds", "2"]) == 2
    assert "--by operator" in capsys.readouterr().err
    assert not (tmp_path / op_profile.CHAPTER).exists()


def test_operator_profile_of_a_model_matches_the_flop_count(tmp_path):
    path = op_profile.op_profile_many([{"kind": "model", "target": "levit_128s", "seconds": 0.3, "threads": 1}],
                                      rounds=2, run_id="t1", root=tmp_path)
    rows = pd.read_csv(path)
    assert path.parent == tmp_path / op_profile.CHAPTER
    env = json.loads(path.with_suffix("").with_suffix(".env.json").read_text())
    assert env["cpu_allocator"] == "kept heap" and "OperatorTimer" in env["profiler"]
    assert sorted(rows["round"].unique()) == [0, 1]
    counted = model_flops("levit_128s")
    for _, one in rows.groupby("round"):
        # every counted MAC and elementwise op is on some operator's row, once
        assert one.macs.sum() == counted.macs
        assert one.elementwise.sum() == counted.elementwise
        assert one.share_pct.sum() == pytest.approx(100.0, abs=0.01)
        assert one.ms_per_pass.sum() == pytest.approx(one.profiled_ms_per_pass.iloc[0], rel=1e-6)
        # the timer's per-operator times sit inside the wall time of the passes
        assert one.profiled_ms_per_pass.iloc[0] <= one.wall_ms_per_pass.iloc[0]
    assert set(rows.category) <= set(op_profile.CATEGORIES)
    lin = rows[rows.operator == "aten::linear"].iloc[0]
    assert lin.category == "products" and lin.gmacs_per_s == pytest.approx(
        lin.macs / (lin.ms_per_pass * 1e6))
    assert rows.loc[rows.macs == 0, "gmacs_per_s"].isna().all()
    assert (rows.page_faults_per_pass >= 0).all()
