"""Fixtures shared by the study tests."""
import gc

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run a test on one CPU thread: tiny tensors gain nothing from a second one, which only adds
    synchronization that a busy shared machine makes slow."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def frozen_gc():
    """Freeze long-lived objects out of the garbage collector's scans: the harness runs gc.collect()
    per candidate, which with timm, sympy and fvcore loaded otherwise takes tenths of a second."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """A scratch results root: ResultsWriter writes there instead of the repository's data/."""
    monkeypatch.setenv("VITSPEED_RESULTS_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def oom_on_call(monkeypatch):
    """``oom_on_call(n)``: the n-th candidate prepared by the comparison machinery runs out of memory."""
    import vitspeed.studies.compare as compare

    real = compare.forward_peak_memory

    def install(n: int) -> None:
        calls = []

        def fake(fn, dev):
            calls.append(1)
            if len(calls) == n:
                raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
            return real(fn, dev)

        monkeypatch.setattr(compare, "forward_peak_memory", fake)

    return install


@pytest.fixture
def nonfinite_on(monkeypatch):
    """``nonfinite_on(label)``: the comparison machinery's output check finds NaN in that candidate's output."""
    import vitspeed.studies.compare as compare
    from vitspeed.timing import NonFiniteOutput

    real = compare.check_result

    def install(label: str) -> None:
        def fake(out, name=None, **kw):
            if name == label:
                raise NonFiniteOutput(f"output of {label} contains 5 non-finite value(s) (NaN or inf); refusing",
                                      label)
            return real(out, name=name, **kw)

        monkeypatch.setattr(compare, "check_result", fake)

    return install
