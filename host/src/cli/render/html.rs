//! A tiny builder for safe, self-contained HTML report pages.
//!
//! Every piece of text goes through [`escape`]; the only markup that is
//! inserted verbatim is an [`Svg`], which only [`super::svg`] can create.
//! [`Page::finish`] yields one HTML5 document with an inline stylesheet and
//! nothing else: no scripts, no fonts, no images, no links to fetch. A
//! `Content-Security-Policy` meta tag (`default-src 'none'`) makes the
//! browser refuse any load that slipped in anyway, so a report can be
//! opened offline or mailed around without phoning home.

use std::fmt::Write as _;

use super::svg::Svg;

/// The policy in the page's CSP meta tag: nothing may load, inline styles
/// are allowed, images only from `data:` URLs. Written into the attribute
/// verbatim (it holds no `"` or `&`), so the page contains this exact text.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;\
background:#fff;margin:2rem auto;max-width:1100px;padding:0 1rem}\
h1{font-size:1.6rem;margin:0 0 1rem}\
h2{font-size:1.2rem;margin:2rem 0 .6rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem}\
p{margin:.4rem 0}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1.2rem;margin:0}\
dt{font-weight:600;color:#57606a}\
dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}\
.badge{display:inline-block;font-size:1.15rem;font-weight:700;padding:.35rem .9rem;\
border-radius:.4rem;margin:.4rem 0;border:2px solid}\
.badge.ok{color:#1a7f37;background:#dafbe1;border-color:#1a7f37}\
.badge.broken{color:#cf222e;background:#ffebe9;border-color:#cf222e}\
div.table{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}\
th,td{text-align:left;vertical-align:top;padding:.3rem .6rem;border-bottom:1px solid #d8dee4;\
overflow-wrap:break-word}\
th{background:#f6f8fa;font-weight:600;white-space:nowrap}\
td.brk{overflow-wrap:anywhere;min-width:12ch}\
tr.broken td{background:#ffebe9;color:#82071e;font-weight:600}\
tr.warn td{background:#fff8c5}\
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto;white-space:pre-wrap}\
svg{display:block;max-width:100%;height:auto;margin:.4rem 0}\
";

/// Escapes text for HTML (and XML/SVG) content and attribute values.
///
/// Replaces `& < > " '` with character references. Control characters
/// other than tab, LF and CR become U+FFFD: HTML treats them as parse
/// errors and XML forbids them outright, so the inline SVG stays
/// well-formed whatever a job or audit subject contains.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// How a status badge is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Green.
    Ok,
    /// Red.
    Broken,
}

impl Status {
    fn class(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Broken => "broken",
        }
    }
}

/// One table row: text cells and an optional CSS class for the `<tr>`.
///
/// The stylesheet highlights the classes `broken` (red) and `warn`
/// (yellow); any other class is harmless but unstyled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    cells: Vec<String>,
    class: Option<String>,
}

impl Row {
    pub fn new(cells: Vec<String>) -> Self {
        Row { cells, class: None }
    }

    pub fn with_class(mut self, class: &str) -> Self {
        self.class = Some(class.to_owned());
        self
    }
}

/// An HTML page under construction; see the module docs.
#[derive(Debug, Clone)]
pub struct Page {
    title: String,
    body: String,
}

impl Page {
    /// A page whose `<title>` is `title`.
    pub fn new(title: &str) -> Self {
        Page {
            title: title.to_owned(),
            body: String::new(),
        }
    }

    pub fn h1(&mut self, text: &str) -> &mut Self {
        self.line(format_args!("<h1>{}</h1>", escape(text)))
    }

    pub fn h2(&mut self, text: &str) -> &mut Self {
        self.line(format_args!("<h2>{}</h2>", escape(text)))
    }

    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.line(format_args!("<p>{}</p>", escape(text)))
    }

    /// A `<dl>` of key/value pairs, in the given order.
    pub fn summary<K: AsRef<str>, V: AsRef<str>>(&mut self, pairs: &[(K, V)]) -> &mut Self {
        self.body.push_str("<dl>\n");
        for (key, value) in pairs {
            self.line(format_args!(
                "<dt>{}</dt><dd>{}</dd>",
                escape(key.as_ref()),
                escape(value.as_ref())
            ));
        }
        self.line(format_args!("</dl>"))
    }

    /// A coloured badge. With `id`, the element carries that id and its
    /// text content is exactly `text`, so tests can read it from the DOM.
    pub fn badge(&mut self, id: Option<&str>, status: Status, text: &str) -> &mut Self {
        let id = id
            .map(|id| format!(" id=\"{}\"", escape(id)))
            .unwrap_or_default();
        self.line(format_args!(
            "<p class=\"badge {}\"{id}>{}</p>",
            status.class(),
            escape(text)
        ))
    }

    /// A table with a header row; every cell is escaped text. Cells wrap
    /// only between words; a table too wide for the page scrolls
    /// sideways.
    pub fn table(&mut self, header: &[&str], rows: &[Row]) -> &mut Self {
        self.table_breaking(header, rows, &[])
    }

    /// Like [`Page::table`], but text in the `breakable` columns (0-based)
    /// may wrap anywhere, so long unspaced values such as compact JSON
    /// share the width instead of squeezing or widening the table.
    pub fn table_breaking(
        &mut self,
        header: &[&str],
        rows: &[Row],
        breakable: &[usize],
    ) -> &mut Self {
        self.body
            .push_str("<div class=\"table\"><table>\n<thead><tr>");
        for cell in header {
            let _ = write!(self.body, "<th>{}</th>", escape(cell));
        }
        self.body.push_str("</tr></thead>\n<tbody>\n");
        for row in rows {
            match &row.class {
                Some(class) => {
                    let _ = write!(self.body, "<tr class=\"{}\">", escape(class));
                }
                None => self.body.push_str("<tr>"),
            }
            for (column, cell) in row.cells.iter().enumerate() {
                let class = if breakable.contains(&column) {
                    " class=\"brk\""
                } else {
                    ""
                };
                let _ = write!(self.body, "<td{class}>{}</td>", escape(cell));
            }
            self.body.push_str("</tr>\n");
        }
        self.line(format_args!("</tbody>\n</table></div>"))
    }

    /// An inline SVG chart.
    pub fn svg(&mut self, svg: &Svg) -> &mut Self {
        self.line(format_args!("{}", svg.as_str()))
    }

    /// The complete HTML5 document.
    pub fn finish(self) -> String {
        format!(
            "<!doctype html>\n\
             <html lang=\"en\">\n\
             <head>\n\
             <meta charset=\"utf-8\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"{CONTENT_SECURITY_POLICY}\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n\
             <style>{STYLE}</style>\n\
             </head>\n\
             <body>\n\
             {body}\
             </body>\n\
             </html>\n",
            title = escape(&self.title),
            body = self.body,
        )
    }

    fn line(&mut self, args: std::fmt::Arguments<'_>) -> &mut Self {
        // Writing to a String cannot fail.
        let _ = self.body.write_fmt(args);
        self.body.push('\n');
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>";

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape(r#"a & b < c > d " e ' f"#),
            "a &amp; b &lt; c &gt; d &quot; e &#39; f"
        );
        assert_eq!(escape(EVIL), "&lt;script&gt;alert(1)&lt;/script&gt;");
        assert_eq!(
            escape("tab\tnl\nnul\0bel\u{7}"),
            "tab\tnl\nnul\u{FFFD}bel\u{FFFD}"
        );
        assert_eq!(escape("ünïcödé ✓"), "ünïcödé ✓");
    }

    fn evil_page() -> String {
        let mut page = Page::new(EVIL);
        page.h1(EVIL)
            .h2(EVIL)
            .paragraph(EVIL)
            .summary(&[(EVIL, EVIL)])
            .badge(Some("x\"><script>"), Status::Broken, EVIL)
            .table(
                &[EVIL],
                &[
                    Row::new(vec![EVIL.to_owned()]),
                    Row::new(vec![EVIL.to_owned()]).with_class("\"><script>"),
                ],
            );
        page.finish()
    }

    #[test]
    fn text_is_escaped_everywhere() {
        let html = evil_page();
        assert!(!html.to_ascii_lowercase().contains("<script"), "{html}");
        assert!(html.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
        assert!(html.contains("<title>&lt;script&gt;"));
        assert!(html.contains("<td>&lt;script&gt;"));
    }

    #[test]
    fn document_is_self_contained() {
        let html = evil_page();
        assert!(html.starts_with("<!doctype html>\n"));
        assert!(html.contains("<meta charset=\"utf-8\">"));
        assert!(html.contains(
            "<meta http-equiv=\"Content-Security-Policy\" \
             content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        ));
        for banned in [
            "http://", "https://", "<script", "<link", "<img", "@import", "url(",
        ] {
            assert!(!html.contains(banned), "found {banned}");
        }
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn badge_text_is_exact() {
        let mut page = Page::new("t");
        page.badge(Some("chain-status"), Status::Ok, "intact");
        let html = page.finish();
        assert!(html.contains("<p class=\"badge ok\" id=\"chain-status\">intact</p>"));
    }

    #[test]
    fn row_class_is_applied() {
        let mut page = Page::new("t");
        page.table(
            &["a", "b"],
            &[
                Row::new(vec!["1".into(), "2".into()]),
                Row::new(vec!["3".into(), "4".into()]).with_class("broken"),
            ],
        );
        let html = page.finish();
        assert!(html.contains("<tr><td>1</td><td>2</td></tr>"));
        assert!(html.contains("<tr class=\"broken\"><td>3</td><td>4</td></tr>"));
    }

    #[test]
    fn breakable_columns_are_marked() {
        let mut page = Page::new("t");
        page.table_breaking(
            &["a", "b"],
            &[Row::new(vec!["1".into(), "{\"k\":1}".into()])],
            &[1],
        );
        let html = page.finish();
        assert!(html.contains("<tr><td>1</td><td class=\"brk\">{&quot;k&quot;:1}</td></tr>"));
    }
}
