"""Progress bars: on stderr only, only on a terminal (or when forced), off under --quiet."""

from __future__ import annotations

import io

import pytest

from advfeatures import progress as P


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv("ADVFEATURES_PROGRESS", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    yield
    P.set_progress_enabled(True)


def test_batches_cover_every_item_once():
    assert list(P.progress_batches(10, 4)) == [(0, 4), (4, 8), (8, 10)]
    assert list(P.progress_batches(0, 4)) == []
    with pytest.raises(ValueError):
        list(P.progress_batches(3, 0))


def test_a_terminal_gets_a_bar_a_pipe_does_not(monkeypatch):
    tty, pipe = _Tty(), io.StringIO()
    list(P.progress_batches(6, 2, desc="attack", file=tty, mininterval=0))
    list(P.progress_batches(6, 2, desc="attack", file=pipe, mininterval=0))
    assert "attack" in tty.getvalue() and "img" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_quiet_rank_and_environment(monkeypatch):
    assert P.progress_enabled(_Tty())
    P.set_progress_enabled(False)  # --quiet
    assert not P.progress_enabled(_Tty())
    P.set_progress_enabled(True)
    monkeypatch.setenv("RANK", "1")  # only rank 0 of a torchrun job draws
    assert not P.progress_enabled(_Tty())
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("ADVFEATURES_PROGRESS", "1")
    assert P.progress_enabled(io.StringIO())
    monkeypatch.setenv("ADVFEATURES_PROGRESS", "0")
    assert not P.progress_enabled(_Tty())


def test_bars_go_to_stderr_not_stdout(capsys, monkeypatch):
    monkeypatch.setenv("ADVFEATURES_PROGRESS", "1")
    for _ in P.progress(range(3), desc="epochs", mininterval=0):
        pass
    out, err = capsys.readouterr()
    assert out == "" and "epochs" in err


def test_progress_disabled_restores_the_setting():
    with P.progress_disabled():
        assert not P.progress_enabled(_Tty())
    assert P.progress_enabled(_Tty())
    P.set_progress_enabled(False)
    with P.progress_disabled():
        pass
    assert not P.progress_enabled(_Tty())
