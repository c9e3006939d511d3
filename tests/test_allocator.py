"""vitspeed.allocator: which allocator setting a process runs under, and the two-process comparison."""
import pytest

from vitspeed.allocator import ALLOCATOR_VARS, KEPT_HEAP, allocator_comparison, allocator_state


def test_allocator_state_names_the_setting():
    assert allocator_state({}) == "glibc default"
    assert allocator_state({"PATH": "/bin", **KEPT_HEAP}) == "kept heap"
    assert allocator_state({"LD_PRELOAD": "libjemalloc.so"}) == "custom"
    assert allocator_state({"MALLOC_MMAP_MAX_": "0"}) == "custom"  # half of the kept heap is not it
    assert set(KEPT_HEAP) <= set(ALLOCATOR_VARS)


def test_comparison_times_the_cores_in_one_fresh_process_per_setting(monkeypatch):
    # the caller's own allocator variables must not leak into the glibc-default process
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    rows = allocator_comparison(("softmax", "softmax_explicit"), tokens=64, head_dim=8, heads=2, warmup=1,
                                repeats=3, threads=1)
    assert [(r["allocator"], r["attention"]) for r in rows] == [  # the kept heap first: see the docstring
        ("kept heap", "softmax"), ("kept heap", "softmax_explicit"),
        ("glibc default", "softmax"), ("glibc default", "softmax_explicit")]
    assert all(r["status"] == "ok" and r["median_ms"] > 0 and r["threads"] == 1 and r["tokens"] == 64 for r in rows)
    assert rows[1]["macs"] == rows[3]["macs"] == 2 * 2 * 64 * 64 * 8


def test_comparison_rejects_unknown_variants_before_starting_processes():
    with pytest.raises(ValueError, match="valid"):
        allocator_comparison(("softmax", "nope"))
    with pytest.raises(ValueError, match="valid choices: glibc default, kept heap"):
        allocator_comparison(("softmax",), settings=("jemalloc",))


def test_comparison_probes_only_the_settings_asked_for():
    rows = allocator_comparison(("softmax",), tokens=16, head_dim=8, heads=1, warmup=1, repeats=2, threads=1,
                                settings=("glibc default",))
    assert [r["allocator"] for r in rows] == ["glibc default"]
