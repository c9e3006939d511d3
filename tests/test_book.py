"""glue for the notebooks: figures become PNG images, and the fallback stores what myst-nb stores."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import vitspeed.book as book  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _captured(monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append((obj, kw)))
    return shown


def test_figure_png_is_a_png_of_the_figure():
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    data = book.figure_png(fig, dpi=50)
    plt.close(fig)
    assert data.startswith(PNG_MAGIC) and len(data) > 200


@pytest.mark.parametrize("use_myst", [True, False])
def test_glued_figure_is_stored_as_png_not_as_its_repr(monkeypatch, use_myst):
    if use_myst:
        pytest.importorskip("myst_nb")
        import myst_nb.ext.glue as mg
        shown = []
        monkeypatch.setattr(mg, "ipy_display", lambda obj, **kw: shown.append((obj, kw)))
    else:
        monkeypatch.setattr(book, "_myst_glue", None)
        shown = _captured(monkeypatch)
    fig, _ = plt.subplots(figsize=(2, 1))
    book.glue("fig_name", fig, display=False)
    plt.close(fig)
    (bundle, kw), = shown
    png = bundle["application/papermill.record/image/png"]
    assert kw["metadata"]["scrapbook"] == {"name": "fig_name", "mime_prefix": "application/papermill.record/"}
    assert kw["raw"] is True
    import base64
    raw = png if isinstance(png, bytes) else base64.b64decode(png)
    assert raw.startswith(PNG_MAGIC)


def test_fallback_glue_of_a_number_shown_or_recorded(monkeypatch):
    monkeypatch.setattr(book, "_myst_glue", None)
    shown = _captured(monkeypatch)
    book.glue("n", 42, display=True)
    book.glue("m", 7, display=False)
    assert shown[0][0] == {"text/plain": "42"} and shown[0][1]["metadata"]["scrapbook"]["mime_prefix"] == ""
    assert shown[1][0] == {"application/papermill.record/text/plain": "7"}
