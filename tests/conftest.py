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
