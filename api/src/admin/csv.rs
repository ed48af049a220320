//! An incremental RFC 4180 reader for the streamed imports ([`super::import`]): bytes
//! in, in any chunks; complete records out, each with the line it starts on.

/// Longest CSV record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// One CSV record: the line it starts on and its fields, or why it is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    pub line: u64,
    pub fields: Result<Vec<String>, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: a second one is a literal quote, anything else
    /// ends the field.
    QuoteInQuoted,
    /// After a bad character following a closing quote: skipping to the field's end.
    Skipping,
}

/// An incremental RFC 4180 reader: bytes in, in any chunks; complete records out.
#[derive(Debug)]
pub struct CsvReader {
    at: At,
    field: Vec<u8>,
    fields: Vec<Vec<u8>>,
    /// Bytes of the current record.
    bytes: usize,
    error: Option<String>,
    /// The current line (1-based).
    line: u64,
    /// The line the current record starts on.
    start_line: u64,
    in_record: bool,
    /// A CR ended the last record: an LF right after it belongs to it.
    skip_lf: bool,
    /// No record emitted yet (a byte order mark may lead).
    first: bool,
}

impl Default for CsvReader {
    fn default() -> Self {
        CsvReader {
            at: At::FieldStart,
            field: Vec::new(),
            fields: Vec::new(),
            bytes: 0,
            error: None,
            line: 1,
            start_line: 1,
            in_record: false,
            skip_lf: false,
            first: true,
        }
    }
}

impl CsvReader {
    /// Reads `input`, appending the records it completes to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<CsvRecord>) {
        for &b in input {
            if std::mem::take(&mut self.skip_lf) && b == b'\n' {
                continue;
            }
            if !self.in_record {
                self.in_record = true;
                self.start_line = self.line;
            }
            match self.at {
                At::Quoted => {
                    if b == b'"' {
                        self.at = At::QuoteInQuoted;
                    } else {
                        if b == b'\n' {
                            self.line += 1;
                        }
                        self.push(b);
                    }
                }
                At::QuoteInQuoted => match b {
                    b'"' => {
                        self.push(b'"');
                        self.at = At::Quoted;
                    }
                    b',' => self.end_field(),
                    b'\n' | b'\r' => self.end_record(b, out),
                    _ => {
                        self.fail("a closing quote is followed by something other than a comma or the line's end".into());
                        self.at = At::Skipping;
                    }
                },
                At::Skipping => match b {
                    b',' => self.end_field(),
                    b'\n' | b'\r' => self.end_record(b, out),
                    _ => {}
                },
                At::FieldStart => match b {
                    b'"' => self.at = At::Quoted,
                    b',' => self.end_field(),
                    b'\n' | b'\r' => self.end_record(b, out),
                    _ => {
                        self.push(b);
                        self.at = At::Unquoted;
                    }
                },
                // A quote inside an unquoted field is kept as it is.
                At::Unquoted => match b {
                    b',' => self.end_field(),
                    b'\n' | b'\r' => self.end_record(b, out),
                    _ => self.push(b),
                },
            }
        }
    }

    /// Ends the input: a last record without a line break is complete too.
    pub fn finish(&mut self, out: &mut Vec<CsvRecord>) {
        if !self.in_record {
            return;
        }
        if self.at == At::Quoted {
            self.fail("a quoted field is not closed before the end of the file".into());
        }
        self.fields.push(std::mem::take(&mut self.field));
        self.emit(out);
    }

    fn push(&mut self, b: u8) {
        self.bytes += 1;
        if self.bytes > MAX_RECORD_BYTES {
            self.fail(format!("the row is longer than {MAX_RECORD_BYTES} bytes"));
        } else if self.error.is_none() {
            self.field.push(b);
        }
    }

    fn fail(&mut self, reason: String) {
        if self.error.is_none() {
            self.error = Some(reason);
            self.field = Vec::new();
            self.fields = Vec::new();
        }
    }

    fn end_field(&mut self) {
        self.bytes += 1;
        let field = std::mem::take(&mut self.field);
        if self.error.is_none() {
            self.fields.push(field);
        }
        self.at = At::FieldStart;
    }

    fn end_record(&mut self, b: u8, out: &mut Vec<CsvRecord>) {
        self.skip_lf = b == b'\r';
        self.line += 1;
        let field = std::mem::take(&mut self.field);
        if self.error.is_none() {
            self.fields.push(field);
        }
        self.emit(out);
    }

    fn emit(&mut self, out: &mut Vec<CsvRecord>) {
        let mut fields = std::mem::take(&mut self.fields);
        let error = self.error.take();
        self.in_record = false;
        self.at = At::FieldStart;
        self.bytes = 0;
        if std::mem::take(&mut self.first)
            && let Some(first) = fields.first_mut()
            && first.starts_with(&[0xEF, 0xBB, 0xBF])
        {
            first.drain(..3);
        }
        if error.is_none() && fields.len() == 1 && fields[0].is_empty() {
            // A blank line.
            return;
        }
        let fields = match error {
            Some(e) => Err(e),
            None => fields
                .into_iter()
                .map(|f| String::from_utf8(f).map_err(|_| "the row is not valid UTF-8".into()))
                .collect(),
        };
        out.push(CsvRecord {
            line: self.start_line,
            fields,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(chunks: &[&[u8]]) -> Vec<CsvRecord> {
        let mut reader = CsvReader::default();
        let mut out = Vec::new();
        for c in chunks {
            reader.feed(c, &mut out);
        }
        reader.finish(&mut out);
        out
    }

    fn fields(r: &CsvRecord) -> Vec<&str> {
        r.fields
            .as_ref()
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn quoting_line_ends_and_chunk_boundaries() {
        let input = b"\xEF\xBB\xBFemail,name\r\nann@x.example,\"Lee, Ann\"\r\n\r\nbob@x.example,\"say \"\"hi\"\"\nbye\"\nc@x.example,plain";
        // Every split point gives the same records.
        let whole = read(&[input]);
        for cut in 0..input.len() {
            assert_eq!(read(&[&input[..cut], &input[cut..]]), whole, "cut at {cut}");
        }
        assert_eq!(whole.len(), 4);
        assert_eq!(fields(&whole[0]), ["email", "name"]);
        assert_eq!(fields(&whole[1]), ["ann@x.example", "Lee, Ann"]);
        assert_eq!(whole[1].line, 2);
        assert_eq!(fields(&whole[2]), ["bob@x.example", "say \"hi\"\nbye"]);
        assert_eq!(whole[2].line, 4, "the blank line counts");
        assert_eq!(whole[3].line, 6);
        assert_eq!(fields(&whole[3]), ["c@x.example", "plain"]);
    }

    #[test]
    fn broken_records_are_errors_and_the_reader_goes_on() {
        let long = format!("x@y.example,{}\n", "a".repeat(MAX_RECORD_BYTES + 1));
        let input = format!("email,a\n\"q\"x,1\n{long}ok@y.example,2\n\"open,3");
        let out = read(&[input.as_bytes()]);
        assert_eq!(out.len(), 5);
        assert!(
            out[1]
                .fields
                .as_ref()
                .unwrap_err()
                .contains("closing quote")
        );
        assert!(out[2].fields.as_ref().unwrap_err().contains("longer than"));
        assert_eq!(fields(&out[3]), ["ok@y.example", "2"]);
        assert!(out[4].fields.as_ref().unwrap_err().contains("not closed"));
        let bad_utf8 = read(&[b"email\n\xff@x.example\n"]);
        assert!(bad_utf8[1].fields.as_ref().unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn an_unfinished_last_line_is_not_emitted_without_finish() {
        let mut reader = CsvReader::default();
        let mut out = Vec::new();
        reader.feed(b"email\na@x.example\nb@x.exa", &mut out);
        assert_eq!(out.len(), 2, "the cut-off row stays pending");
    }
}
