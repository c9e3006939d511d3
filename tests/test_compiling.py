"""torch.compile wrapper: compiled cores compute the eager function, failures are typed, no silent
eager fallback past dynamo's recompile limit, and no compiling inside timed calls."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vitspeed import compiling
from vitspeed.attention import build_core

pytestmark = pytest.mark.usefixtures("one_thread")


class _Scale(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2.0 + 1.0


class _DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # a branch on a value: a graph break, which fullgraph=True refuses
            return x + 1
        return x - 1


def test_compiled_core_matches_eager_and_reports_its_compile_time():
    core = build_core("linear_relu", head_dim=8, num_heads=2).eval()
    q, k, v = (torch.randn(1, 2, 16, 8) for _ in range(3))
    fn, info = compiling.compile_module(core, q, k, v)
    assert info["compile_s"] > 0
    with torch.inference_mode():
        torch.testing.assert_close(fn(q, k, v), core(q, k, v), rtol=1e-5, atol=1e-6)


def test_cache_hits_count_graphs_the_compiler_did_not_compile_again():
    # a shape no other test compiles: the first compile finds nothing in this process's fresh cache;
    # once dynamo has forgotten it, the same core is traced again and inductor finds its graph cached
    q, k, v = (torch.randn(1, 2, 19, 8) for _ in range(3))
    _, first = compiling.compile_module(build_core("linear_relu", head_dim=8, num_heads=2).eval(), q, k, v)
    torch._dynamo.reset()
    _, second = compiling.compile_module(build_core("linear_relu", head_dim=8, num_heads=2).eval(), q, k, v)
    assert first["cache_hits"] == 0 and second["cache_hits"] >= 1


def test_a_graph_break_is_a_compile_failure_naming_the_module():
    with pytest.raises(compiling.CompileFailed, match="_DataDependent"):
        compiling.compile_module(_DataDependent(), torch.randn(4))


def test_a_compiler_that_does_not_work_fails_with_the_device_named_and_is_not_asked_again(monkeypatch):
    monkeypatch.setattr(compiling, "_WARM", [])
    monkeypatch.setattr(compiling, "_FAILED", {})
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken)
    for _ in range(2):
        with pytest.raises(compiling.CompileFailed, match="does not work on cpu: InvalidCxxCompiler") as err:
            compiling.compile_module(_Scale(), torch.randn(4))
        assert err.value.status == "compile_error"
    assert len(calls) == 1  # the second candidate fails at once: no minutes lost per candidate


def test_disabled_compiling_is_a_failure_not_a_silent_eager_run(monkeypatch):
    monkeypatch.setattr(compiling, "_WARM", [])
    monkeypatch.setattr(compiling, "_FAILED", {})
    monkeypatch.setenv("TORCH_COMPILE_DISABLE", "1")
    with pytest.raises(compiling.CompileFailed, match="disabled"):
        compiling.compile_module(_Scale(), torch.randn(4))


@pytest.mark.skipif(bool(__import__("os").environ.get(compiling.KEEP_CACHE_ENV)), reason="the user's cache is kept")
def test_the_process_compiles_into_a_fresh_cache_of_its_own():
    compiling.warm_compiler("cpu")
    import os

    assert compiling._CACHE and os.environ["TORCHINDUCTOR_CACHE_DIR"] == compiling._CACHE[0]
    assert os.path.basename(compiling._CACHE[0]).startswith("vitspeed-compile-")
    assert os.environ["TRITON_CACHE_DIR"].startswith(compiling._CACHE[0])


def test_more_specialisations_than_dynamos_default_limit_are_all_compiled():
    # every instance of one class shares its forward's code object; past the default limit (8) dynamo
    # would run the rest eagerly without a word
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for n in range(1, 11):
        x = torch.ones(n)  # made outside inference mode, as the compiling call's input was
        fn, _ = compiling.compile_module(_Scale(), x)
        with torch.inference_mode():
            assert torch.equal(fn(x), torch.full((n,), 3.0))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 10


@pytest.mark.skipif(not hasattr(torch.compiler, "set_stance"), reason="set_stance needs torch >= 2.6")
def test_no_recompiles_refuses_to_compile_inside_a_timed_call():
    x, other = torch.randn(25), torch.randn(27)  # sizes no other test compiles
    fn, _ = compiling.compile_module(_Scale(), x)
    with compiling.no_recompiles(), torch.inference_mode():
        fn(x)  # what was compiled: fine
        with pytest.raises(Exception, match="(?i)recompil"):
            fn(other)
