"""The HTML page shell every report is written with: escaping, tables, one head."""

from recsys_assets.core.html import CSS, Raw, cell, escape, page, table


def test_escape_makes_markup_and_ampersands_text():
    assert escape("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escape("Drift & recovery") == "Drift &amp; recovery"
    assert escape('it\'s "x"') == "it&#x27;s &quot;x&quot;"
    assert escape(3) == "3" and escape(None) == "None"  # str(value)


def test_cells_escape_text_and_keep_raw_html():
    assert cell(None) == "" and cell(None, missing="n/a") == "n/a"
    assert cell(0.123456) == "0.1235" and cell(7) == "7"
    assert cell("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert cell(Raw("&ge; 3")) == "&ge; 3"


def test_table_escapes_header_and_values():
    text = table(["<h>", "b"], [("<b>x</b>", None), ("a & b", 1.5)], css_class="t")
    assert text == (
        "<table class='t'><tr><th>&lt;h&gt;</th><th>b</th></tr>"
        "<tr><td>&lt;b&gt;x&lt;/b&gt;</td><td></td></tr>"
        "<tr><td>a &amp; b</td><td>1.5</td></tr></table>"
    )
    assert table(["a"], [(None,)], cell=lambda v: cell(v, "n/a")) == (
        "<table><tr><th>a</th></tr><tr><td>n/a</td></tr></table>"
    )


def test_page_has_one_title_heading_and_the_css_once():
    text = page("<script>Ops & co</script>", "<p>body</p>", css=".x{color:red}")
    assert text.startswith("<!doctype html><html><head><meta charset='utf-8'>")
    assert text.count("<title>") == 1 and text.count("<h1>") == 1
    assert "<title>&lt;script&gt;Ops &amp; co&lt;/script&gt;</title>" in text
    assert text.count(CSS) == 1 and f"<style>{CSS}.x{{color:red}}</style>" in text
    assert "<script>" not in text  # no plots: no plotly.js
    assert text.endswith(
        "<h1>&lt;script&gt;Ops &amp; co&lt;/script&gt;</h1><p>body</p></body></html>"
    )


def test_a_page_with_plots_inlines_plotly_once():
    text = page("Plots", "", plotly=True)
    head = text[: text.index("</head>")]
    assert head.count("<script>") == 1 and "plotly.js v" in head and "<script src=" not in text
