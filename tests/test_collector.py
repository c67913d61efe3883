"""The garbage collector paused around a large export, and always resumed."""

from __future__ import annotations

import gc

import pytest

from saliq import collector


def test_the_collector_is_paused_inside_and_resumed_by_the_outermost_pause():
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner pause leaves it to the outer
    assert gc.isenabled()


def test_the_collector_resumes_after_an_error_and_stays_off_if_it_was():
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("the export failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector.paused():
            pass
        assert not gc.isenabled()  # someone else's pause is theirs to end
    finally:
        gc.enable()
