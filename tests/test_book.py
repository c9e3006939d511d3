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


def test_measured_ticks_label_the_measured_sizes_on_every_axis():
    import seaborn as sns
    import pandas as pd

    data = pd.DataFrame({"tokens": [196, 784, 3136] * 2, "ms": [1, 2, 4, 2, 3, 5], "panel": ["a"] * 3 + ["b"] * 3})
    g = sns.relplot(data=data, x="tokens", y="ms", col="panel", kind="line")
    g.set(xscale="log")
    book.measured_ticks(g, data.tokens.astype(float))
    for ax in g.axes.flat:
        assert list(ax.get_xticks()) == [196, 784, 3136]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["196", "784", "3136"]
    plt.close(g.figure)


def test_tidy_shows_counts_as_integers_in_columns_and_index_levels():
    import numpy as np
    import pandas as pd

    from vitspeed.book import tidy

    df = pd.DataFrame({"hardware": ["a", "a", "b"], "tokens": [64.0, 256.0, np.nan],
                       "median_ms": [1.0, 2.0, 3.0], "latency": [0.5, 1.5, 2.5]})
    out = tidy(df)
    assert str(out.tokens.dtype) == "Int64" and out.tokens.tolist()[:2] == [64, 256]
    assert out.median_ms.dtype == float  # not a count: left alone even though its values are whole
    wide = df.dropna().pivot_table(index="hardware", columns="tokens", values="latency")
    assert list(tidy(wide).columns) == [64, 256] and "64.0" not in tidy(wide).to_html()
    indexed = tidy(df.dropna(), index=["hardware", "tokens"])
    assert indexed.index.names == ["hardware", "tokens"] and "256.0" not in indexed.to_html()


def test_tidy_names_missing_cells_and_keeps_fractional_counts():
    import numpy as np
    import pandas as pd

    from vitspeed.book import tidy

    df = pd.DataFrame({"tokens": [1.5, 2.0], "seed_s": [0.0092, np.nan], "speedup": [1.2, 0.85]})
    out = tidy(df, missing="-")
    assert out.tokens.tolist() == ["1.5", "2.0"]  # not whole numbers: not cast to integers
    assert out.seed_s.tolist() == ["0.0092", "-"] and "NaN" not in out.to_html()
    assert out.speedup.tolist() == ["1.20", "0.85"]  # one number of decimals per column


def test_legend_below_puts_the_legend_under_the_panels():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    data = pd.DataFrame({"x": [1, 2, 1, 2], "y": [1, 2, 2, 3], "v": ["a", "a", "b", "b"]})
    g = sns.relplot(data=data, x="x", y="y", hue="v", kind="line")
    book.legend_below(g, ncol=2)
    g.figure.canvas.draw()
    legend_box = g.legend.get_window_extent()
    axes_box = g.axes.flat[0].get_window_extent()
    assert legend_box.y1 <= axes_box.y0  # below the panel, not beside it
    assert g.legend._ncols == 2
    plt.close(g.figure)
    bare = sns.FacetGrid(data)
    book.legend_below(bare)  # no legend: nothing to move, no error
    plt.close(bare.figure)


def test_short_citation_names_first_author_and_year(tmp_path):
    from vitspeed.book import short_citation
    bib = tmp_path / "refs.bib"
    bib.write_text("@article{a2020x,\n  title = {T},\n  author = {Doe, Jane and Roe, Rick},\n  year = {2020}\n}\n"
                   "@misc{org,\n  author = {{Some Lab}},\n  year = {2019}\n}\n"
                   "@book{solo,\n  author = {J{\\'e}gou, Herv{\\'e}},\n  year = {1958}\n}\n", encoding="utf-8")
    assert short_citation("a2020x", bib) == "Doe et al. 2020"
    assert short_citation("org", bib) == "Some Lab 2019"
    assert short_citation("solo", bib) == "Jegou 1958"
    assert short_citation("missing", bib) == "missing" and short_citation("", bib) == ""
    # the book's own bibliography names every attention variant's source
    from vitspeed.attention import get_attention, list_attentions
    for name in list_attentions():
        key = get_attention(name).paper
        assert short_citation(key) != key, key


def test_tidy_raises_the_display_limits_so_no_table_is_cut(monkeypatch):
    import pandas as pd

    with pd.option_context("display.max_rows", 60, "display.max_columns", 20):
        big = pd.DataFrame({f"c{i}": range(100) for i in range(24)})
        shown = book.tidy(big)
        assert pd.get_option("display.max_rows") == 100 and pd.get_option("display.max_columns") == 25
        html = shown._repr_html_()  # what a notebook shows
        assert "..." not in html and html.count("<tr") == 1 + 100 and "<th>c23</th>" in html
        book.tidy(big.head(3))  # a small table never lowers them
        assert pd.get_option("display.max_rows") == 100


def test_setting_labels_name_threads_on_a_cpu_only():
    import pandas as pd

    rows = pd.DataFrame({"hardware": ["cpu-amd-epyc-2t", "cuda-nvidia-h200"], "dtype": ["float32", "bfloat16"],
                         "threads": [2.0, 16.0], "device": ["cpu", "cuda"]})
    assert list(book.setting_label(rows)) == ["cpu-amd-epyc-2t | float32 | 2 thr", "cuda-nvidia-h200 | bfloat16"]
    assert list(book.setting_label(rows.drop(columns="device"))) == list(book.setting_label(rows))
