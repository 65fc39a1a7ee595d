from selfinstruct.render import escape_text, marked_html


def test_html_in_model_text_is_inert():
    hostile = '<script>alert(1)</script> ![x](http://a/b.png) <b>bold</b> "q" & more'
    out = escape_text(hostile)
    assert "<script>" not in out and "<b>" not in out
    assert "&lt;script&gt;" in out and "&amp; more" in out


def test_marks_wrap_the_spans_and_nothing_else():
    text = "Draw a <map> of the town"
    out = marked_html(text, [(0, 4), (8, 11), (9, 10)])
    assert out.count("<mark>") == 2
    assert "<mark>Draw</mark>" in out and "&lt;<mark>map</mark>&gt;" in out


def test_blank_lines_cannot_end_the_html_block():
    text = "Describe the place.\n\n![x](http://127.0.0.1:9/evil.png) **bold**\r\nmore\rend"
    out = marked_html(text, [(0, 8)])
    assert "\n" not in out and "\r" not in out
    assert out.count("&#10;") == 4


def test_escape_markdown_leaves_no_markup_and_reads_back_exactly():
    import re

    from selfinstruct.render import escape_markdown

    for text in ("![x](http://127.0.0.1:9/x.png) **boom**", "a_b *c* `d` <img src=x> :red[e] :material/lock:",
                 "# title\n- item\n\n[link](http://x)", "www.example.com/x.png ~~s~~ $x$ \\ & &amp;"):
        escaped = escape_markdown(text)
        # every markdown-significant character is backslash-escaped...
        assert not re.search(r"(?<!\\)[!\[\]()*_`<>#~$:&|]", escaped.replace("\\\\", "")), escaped
        # ...and undoing CommonMark's backslash escapes gives the text back (lines joined)
        assert re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", escaped) == " ".join(text.splitlines())


def test_table_shows_gaps_as_a_dash_not_none():
    from selfinstruct import render

    frame = render.table([{"review": None, "note": "kept", "score": None},
                          {"review": "rescued", "note": None, "score": 0.5}], ["review", "note"])
    assert list(frame["review"]) == ["–", "rescued"] and list(frame["note"]) == ["kept", "–"]
    assert frame["score"].isna().tolist() == [True, False]      # left alone: not in `columns`
    assert list(render.table([{"a": None}])["a"]) == ["–"]


def test_an_escaped_email_is_text_not_a_mailto_link():
    from selfinstruct.render import escape_markdown

    assert escape_markdown("ann@example.org") == "ann\\@example\\.org"
