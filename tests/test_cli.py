"""The `vitspeed` command: JSON output and clear errors with a non-zero exit."""
import json

import pytest

from vitspeed.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_every_variant_and_model(capsys):
    code, out, _ = run(capsys, "list", "--json")
    data = json.loads(out)
    names = {a["name"] for a in data["attention"]}
    assert code == 0 and {"softmax", "softmax_explicit", "jaccard"} <= names
    models = {m["name"] for m in data["models"]}
    assert {"deit_small_patch16_224", "swin_tiny_patch4_window7_224"} <= models


def test_flops_json_for_deit_small(capsys):
    code, out, _ = run(capsys, "flops", "deit_small_patch16_224", "--json")
    data = json.loads(out)
    assert code == 0
    assert abs(data["gmacs"] - 4.6) / 4.6 < 0.03
    assert data["unhandled_ops"] == {}
    assert set(data["breakdown"]) == {"attention", "ffn", "rest"}


@pytest.mark.parametrize("argv,match", [
    (["flops", "nonexistent"], "unknown model"),
    (["flops", "deit_tiny_patch16_224", "--attention", "nope"], "valid choices"),
    (["flops", "deit_tiny_patch16_224", "--img-size", "225"], "not divisible by the patch size"),
    (["flops", "deit_tiny_patch16_224", "--attention", "softmax", "--opt", "bogus=1"], "valid options"),
    (["flops", "deit_tiny_patch16_224", "--opt", "novalue"], "KEY=VALUE"),
    (["bench", "deit_tiny_patch16_224", "--dtype", "float16"], "float16"),
    (["bench", "deit_tiny_patch16_224", "--dtype", "int3"], "valid"),
    (["bench", "deit_tiny_patch16_224", "--repeats", "0"], "--repeats must be >= 1"),
    (["bench", "deit_tiny_patch16_224", "--warmup", "-1"], "--warmup >= 0"),
    (["flops", "deit_small_patch16_224", "--attention", "hallucinated", "--opt", "ratio=nan"], "ratio"),
    (["run", "--preset", "nope"], "valid choices: cpu, gpu, gpu-smoke, smoke"),
])
def test_bad_input_is_one_clear_error_and_exit_2(capsys, argv, match):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert match in err
    assert err.count("\n") == 1 and out == ""


def test_cuda_requested_without_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, _, err = run(capsys, "bench", "deit_tiny_patch16_224", "--device", "cuda")
    assert code == 2 and "cuda" in err and "cpu" in err


def test_bench_json_on_cpu(capsys):
    code, out, _ = run(capsys, "bench", "deit_tiny_patch16_224", "--img-size", "64", "--warmup", "1",
                       "--repeats", "3", "--json")
    data = json.loads(out)
    assert code == 0 and data["median_ms"] > 0 and data["environment"]["torch_version"]
