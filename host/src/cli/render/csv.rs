//! A minimal RFC 4180 CSV writer, so exports need no CSV dependency.
//!
//! Records end with LF (`\n`), not the CRLF RFC 4180 names: every CSV
//! reader in practical use accepts LF, and LF keeps the files friendly to
//! `grep`, `diff` and shell tools. A field is quoted when it contains a
//! comma, a double quote, CR or LF, and embedded quotes are doubled, so line
//! breaks inside fields survive a round trip. Everything else is written
//! verbatim: no trimming and no "formula injection" mangling, which would
//! make the export differ from the data it exports.

use std::io::{self, Write};

/// Writes `header` and then every row as one CSV record each.
///
/// Every row must have as many fields as the header; a mismatch is an
/// [`io::ErrorKind::InvalidInput`] error, returned when that row is reached
/// (earlier records have already been written).
pub fn write_csv(
    out: &mut impl Write,
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> io::Result<()> {
    write_record(out, header)?;
    for (index, row) in rows.into_iter().enumerate() {
        if row.len() != header.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "CSV row {} has {} fields, header has {}",
                    index + 1,
                    row.len(),
                    header.len()
                ),
            ));
        }
        write_record(out, &row)?;
    }
    Ok(())
}

fn write_record<S: AsRef<str>>(out: &mut impl Write, fields: &[S]) -> io::Result<()> {
    let mut line = String::new();
    // A record of one empty field would otherwise be a blank line, which
    // readers commonly skip; quoting keeps the record.
    if let [only] = fields
        && only.as_ref().is_empty()
    {
        line.push_str("\"\"");
    }
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        push_field(&mut line, field.as_ref());
    }
    line.push('\n');
    // One write per record, so an unbuffered writer is not hit per field.
    out.write_all(line.as_bytes())
}

fn push_field(line: &mut String, field: &str) {
    if field.contains([',', '"', '\r', '\n']) {
        line.push('"');
        line.push_str(&field.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(field);
    }
}

/// A strict RFC 4180 reader for tests, here and in the report builders.
#[cfg(test)]
pub(crate) fn parse(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(field.is_empty(), "quote inside an unquoted field");
                quoted = true;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            '\r' => panic!("bare CR outside quotes"),
            _ => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    assert!(
        field.is_empty() && record.is_empty(),
        "last record lacks its line end"
    );
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(header: &[&str], rows: Vec<Vec<String>>) -> String {
        let mut out = Vec::new();
        write_csv(&mut out, header, rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn row(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn plain_fields_are_not_quoted() {
        let text = render(
            &["a", "b"],
            vec![row(&["1", "two words"]), row(&["", " x "])],
        );
        assert_eq!(text, "a,b\n1,two words\n, x \n");
    }

    #[test]
    fn special_characters_are_quoted() {
        let text = render(
            &["f"],
            vec![
                row(&["a,b"]),
                row(&["say \"hi\""]),
                row(&["line\nbreak"]),
                row(&["cr\rhere"]),
                row(&["\""]),
            ],
        );
        assert_eq!(
            text,
            "f\n\"a,b\"\n\"say \"\"hi\"\"\"\n\"line\nbreak\"\n\"cr\rhere\"\n\"\"\"\"\n"
        );
    }

    #[test]
    fn single_empty_field_is_not_a_blank_line() {
        assert_eq!(render(&["f"], vec![row(&[""])]), "f\n\"\"\n");
    }

    #[test]
    fn round_trip() {
        let rows = vec![
            row(&["1", "plain", "{\"a\":[1,2]}"]),
            row(&["2", "comma, quote \" and\r\nCRLF", ""]),
            row(&["3", "<script>alert(1)</script>", "ünïcödé ✓"]),
            row(&["4", "", "trailing,"]),
        ];
        let text = render(&["seq", "subject", "details"], rows.clone());
        let parsed = parse(&text);
        assert_eq!(parsed[0], row(&["seq", "subject", "details"]));
        assert_eq!(parsed[1..], rows[..]);
    }

    #[test]
    fn header_only() {
        assert_eq!(render(&["a", "b,c"], vec![]), "a,\"b,c\"\n");
    }

    #[test]
    fn wrong_field_count_is_an_error() {
        let mut out = Vec::new();
        let err = write_csv(
            &mut out,
            &["a", "b"],
            vec![row(&["1", "2"]), row(&["only"])],
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(String::from_utf8(out).unwrap(), "a,b\n1,2\n");
    }
}
