//! Segment filters: a small expression language over a contact's attributes.
//!
//! ```text
//! plan = "pro" and (country in ("DE", "AT") or signups >= 3) and not unsubscribed exists
//! domain = "example.com" or email ends_with "@shop.example"
//! ```
//!
//! Grammar (keywords are case-insensitive):
//!
//! ```text
//! expr       := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" expr ")" | comparison
//! comparison := field op value
//!             | field "in" "(" value ("," value)* ")"
//!             | field ("contains" | "starts_with" | "ends_with") string
//!             | field "exists"
//! op         := "=" | "!=" | "<" | "<=" | ">" | ">="
//! field      := letter (letter | digit | "_" | "-" | ".")*
//! value      := string | number
//! string     := '"' (any character but '"' and '\', or '\"' or '\\')* '"'
//! ```
//!
//! Fields name attributes; `email` and `domain` are the contact's address and its
//! domain (compared in lower case). Values compare as numbers when both sides are
//! numbers, else as text (exactly). An attribute the contact lacks makes every
//! comparison on it false, `!=` included; test it with `exists`. Filters are limited in
//! length, nesting and number of terms, so a stored filter is cheap to evaluate.

use crate::domain::campaign::Contact;
use std::fmt;

/// Longest filter accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 32;
/// Most comparisons in one filter.
pub const MAX_TERMS: usize = 256;

/// Why a filter does not parse: where (a 1-based character position) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter, at character {at}: {reason}")]
pub struct SegmentError {
    pub at: usize,
    pub reason: String,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    Cmp(String, Op, Value),
    In(String, Vec<Value>),
    Text(String, TextOp, String),
    Exists(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Number(f64),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(Op),
    Open,
    Close,
    Comma,
}

impl Filter {
    /// Parses a filter.
    pub fn parse(text: &str) -> Result<Filter, SegmentError> {
        if text.len() > MAX_LEN {
            return Err(SegmentError {
                at: 1,
                reason: format!("longer than {MAX_LEN} bytes"),
            });
        }
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Err(SegmentError {
                at: 1,
                reason: "empty filter".into(),
            });
        }
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            terms: 0,
            end: text.chars().count() + 1,
        };
        let root = p.expr()?;
        if let Some((at, t)) = p.tokens.get(p.pos) {
            return Err(SegmentError {
                at: *at,
                reason: format!("unexpected {}", describe(t)),
            });
        }
        Ok(Filter { root })
    }

    /// Whether `contact` is in the segment.
    pub fn matches(&self, contact: &Contact) -> bool {
        eval(&self.root, contact)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(f, &self.root)
    }
}

fn write_node(f: &mut fmt::Formatter<'_>, n: &Node) -> fmt::Result {
    let value = |v: &Value| match v {
        Value::Text(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        Value::Number(x) => x.to_string(),
    };
    match n {
        Node::Or(xs) | Node::And(xs) => {
            let sep = if matches!(n, Node::Or(_)) {
                " or "
            } else {
                " and "
            };
            f.write_str("(")?;
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                write_node(f, x)?;
            }
            f.write_str(")")
        }
        Node::Not(x) => {
            f.write_str("not ")?;
            write_node(f, x)
        }
        Node::Cmp(field, op, v) => {
            let op = match op {
                Op::Eq => "=",
                Op::Ne => "!=",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            };
            write!(f, "{field} {op} {}", value(v))
        }
        Node::In(field, vs) => {
            let vs: Vec<String> = vs.iter().map(value).collect();
            write!(f, "{field} in ({})", vs.join(", "))
        }
        Node::Text(field, op, s) => {
            let op = match op {
                TextOp::Contains => "contains",
                TextOp::StartsWith => "starts_with",
                TextOp::EndsWith => "ends_with",
            };
            write!(f, "{field} {op} {}", value(&Value::Text(s.clone())))
        }
        Node::Exists(field) => write!(f, "{field} exists"),
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Ident(s) => format!("word {s:?}"),
        Token::Str(s) => format!("string {s:?}"),
        Token::Num(n) => format!("number {n}"),
        Token::Op(_) => "operator".into(),
        Token::Open => "\"(\"".into(),
        Token::Close => "\")\"".into(),
        Token::Comma => "\",\"".into(),
    }
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>, SegmentError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        let err = |reason: String| SegmentError { at, reason };
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => out.push((at, Token::Open)),
            ')' => out.push((at, Token::Close)),
            ',' => out.push((at, Token::Comma)),
            '=' => out.push((at, Token::Op(Op::Eq))),
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((at, Token::Op(Op::Ne)));
                i += 1;
            }
            '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('<', false) => Op::Lt,
                    ('<', true) => Op::Le,
                    ('>', false) => Op::Gt,
                    _ => Op::Ge,
                };
                out.push((at, Token::Op(op)));
                if eq {
                    i += 1;
                }
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err("string not closed".into())),
                        Some('"') => break,
                        Some('\\') => match chars.get(i + 1) {
                            Some(&e @ ('"' | '\\')) => {
                                s.push(e);
                                i += 2;
                            }
                            _ => {
                                return Err(SegmentError {
                                    at: i + 1,
                                    reason: "only \\\" and \\\\ may be escaped".into(),
                                });
                            }
                        },
                        Some(&c) if c.is_control() => {
                            return Err(SegmentError {
                                at: i + 1,
                                reason: "control character in a string".into(),
                            });
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push((at, Token::Str(s)));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                let n: f64 = s
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite())
                    .ok_or_else(|| err(format!("{s:?} is not a number")))?;
                out.push((at, Token::Num(n)));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
                {
                    i += 1;
                }
                out.push((at, Token::Ident(chars[start..i].iter().collect())));
                continue;
            }
            c => return Err(err(format!("unexpected character {c:?}"))),
        }
        i += 1;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    depth: usize,
    terms: usize,
    end: usize,
}

fn keyword(t: Option<&(usize, Token)>, word: &str) -> bool {
    matches!(t, Some((_, Token::Ident(s))) if s.eq_ignore_ascii_case(word))
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.pos)
    }

    fn here(&self) -> usize {
        self.peek().map_or(self.end, |(at, _)| *at)
    }

    fn fail<T>(&self, reason: impl Into<String>) -> Result<T, SegmentError> {
        Err(SegmentError {
            at: self.here(),
            reason: reason.into(),
        })
    }

    fn expr(&mut self) -> Result<Node, SegmentError> {
        let mut xs = vec![self.and()?];
        while keyword(self.peek(), "or") {
            self.pos += 1;
            xs.push(self.and()?);
        }
        Ok(if xs.len() == 1 {
            xs.remove(0)
        } else {
            Node::Or(xs)
        })
    }

    fn and(&mut self) -> Result<Node, SegmentError> {
        let mut xs = vec![self.unary()?];
        while keyword(self.peek(), "and") {
            self.pos += 1;
            xs.push(self.unary()?);
        }
        Ok(if xs.len() == 1 {
            xs.remove(0)
        } else {
            Node::And(xs)
        })
    }

    fn unary(&mut self) -> Result<Node, SegmentError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.fail(format!("nested more than {MAX_DEPTH} deep"));
        }
        let node = if keyword(self.peek(), "not") {
            self.pos += 1;
            Node::Not(Box::new(self.unary()?))
        } else if matches!(self.peek(), Some((_, Token::Open))) {
            self.pos += 1;
            let inner = self.expr()?;
            if !matches!(self.peek(), Some((_, Token::Close))) {
                return self.fail("expected \")\"");
            }
            self.pos += 1;
            inner
        } else {
            self.comparison()?
        };
        self.depth -= 1;
        Ok(node)
    }

    fn comparison(&mut self) -> Result<Node, SegmentError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return self.fail(format!("more than {MAX_TERMS} comparisons"));
        }
        let field = match self.peek() {
            Some((_, Token::Ident(s)))
                if !["and", "or", "not", "in", "exists"]
                    .iter()
                    .any(|k| s.eq_ignore_ascii_case(k)) =>
            {
                s.clone()
            }
            Some((_, t)) => {
                return self.fail(format!("expected a field name, found {}", describe(t)));
            }
            None => return self.fail("expected a field name, found the end"),
        };
        self.pos += 1;
        let op = self.peek().cloned();
        match op {
            Some((_, Token::Op(op))) => {
                self.pos += 1;
                let v = self.value()?;
                Ok(Node::Cmp(field, op, v))
            }
            Some((_, Token::Ident(w))) if w.eq_ignore_ascii_case("exists") => {
                self.pos += 1;
                Ok(Node::Exists(field))
            }
            Some((_, Token::Ident(w))) if w.eq_ignore_ascii_case("in") => {
                self.pos += 1;
                if !matches!(self.peek(), Some((_, Token::Open))) {
                    return self.fail("expected \"(\" after in");
                }
                self.pos += 1;
                let mut vs = vec![self.value()?];
                while matches!(self.peek(), Some((_, Token::Comma))) {
                    self.pos += 1;
                    vs.push(self.value()?);
                }
                if !matches!(self.peek(), Some((_, Token::Close))) {
                    return self.fail("expected \",\" or \")\" in the list");
                }
                self.pos += 1;
                Ok(Node::In(field, vs))
            }
            Some((_, Token::Ident(w)))
                if ["contains", "starts_with", "ends_with"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                self.pos += 1;
                let op = match w.to_ascii_lowercase().as_str() {
                    "contains" => TextOp::Contains,
                    "starts_with" => TextOp::StartsWith,
                    _ => TextOp::EndsWith,
                };
                match self.value()? {
                    Value::Text(s) => Ok(Node::Text(field, op, s)),
                    Value::Number(_) => {
                        self.pos -= 1;
                        self.fail(format!("{w} takes a string"))
                    }
                }
            }
            _ => self.fail(format!(
                "expected an operator after {field:?} (=, !=, <, <=, >, >=, in, contains, starts_with, ends_with, exists)"
            )),
        }
    }

    fn value(&mut self) -> Result<Value, SegmentError> {
        let v = match self.peek() {
            Some((_, Token::Str(s))) => Value::Text(s.clone()),
            Some((_, Token::Num(n))) => Value::Number(*n),
            Some((_, t)) => return self.fail(format!("expected a value, found {}", describe(t))),
            None => return self.fail("expected a value, found the end"),
        };
        self.pos += 1;
        Ok(v)
    }
}

/// The contact's value of `field`: an attribute, or its address or domain.
fn lookup<'c>(contact: &'c Contact, field: &str) -> Option<std::borrow::Cow<'c, str>> {
    match field {
        "email" => Some(contact.email.as_str().to_ascii_lowercase().into()),
        "domain" => Some(contact.email.domain().to_ascii_lowercase().into()),
        _ => contact.attributes.get(field).map(|v| v.as_str().into()),
    }
}

fn compare(actual: &str, v: &Value) -> Option<std::cmp::Ordering> {
    match v {
        Value::Number(n) => actual.trim().parse::<f64>().ok()?.partial_cmp(n),
        Value::Text(s) => Some(actual.cmp(s.as_str())),
    }
}

fn eval(n: &Node, c: &Contact) -> bool {
    use std::cmp::Ordering::*;
    match n {
        Node::Or(xs) => xs.iter().any(|x| eval(x, c)),
        Node::And(xs) => xs.iter().all(|x| eval(x, c)),
        Node::Not(x) => !eval(x, c),
        Node::Exists(f) => lookup(c, f).is_some(),
        Node::Cmp(f, op, v) => {
            let Some(actual) = lookup(c, f) else {
                return false;
            };
            let Some(ord) = compare(&actual, v) else {
                // A number compared with text that is not one: only `!=` holds.
                return *op == Op::Ne;
            };
            match op {
                Op::Eq => ord == Equal,
                Op::Ne => ord != Equal,
                Op::Lt => ord == Less,
                Op::Le => ord != Greater,
                Op::Gt => ord == Greater,
                Op::Ge => ord != Less,
            }
        }
        Node::In(f, vs) => {
            lookup(c, f).is_some_and(|a| vs.iter().any(|v| compare(&a, v) == Some(Equal)))
        }
        Node::Text(f, op, s) => lookup(c, f).is_some_and(|a| match op {
            TextOp::Contains => a.contains(s.as_str()),
            TextOp::StartsWith => a.starts_with(s.as_str()),
            TextOp::EndsWith => a.ends_with(s.as_str()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmailAddress, TenantId, Timestamp};
    use std::collections::BTreeMap;

    fn contact(email: &str, attrs: &[(&str, &str)]) -> Contact {
        Contact {
            tenant: TenantId::parse("acme").unwrap(),
            email: EmailAddress::parse(email).unwrap(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        }
    }

    fn check(filter: &str, c: &Contact) -> bool {
        Filter::parse(filter)
            .unwrap_or_else(|e| panic!("{filter}: {e}"))
            .matches(c)
    }

    #[test]
    fn comparisons_numbers_text_and_missing_attributes() {
        let c = contact(
            "Ana@Shop.Example",
            &[("plan", "pro"), ("signups", "12"), ("country", "DE")],
        );
        assert!(check(r#"plan = "pro""#, &c));
        assert!(!check(r#"plan = "Pro""#, &c));
        assert!(check("signups > 3", &c), "numeric, not text, order");
        assert!(check("signups >= 12 and signups <= 12", &c));
        assert!(
            check(r#"signups < "3""#, &c),
            "a string literal compares as text"
        );
        assert!(check(r#"country in ("AT", "DE")"#, &c));
        assert!(!check(r#"country in ("AT", "CH")"#, &c));
        assert!(check(r#"domain = "shop.example""#, &c));
        assert!(check(r#"email ends_with "@shop.example""#, &c));
        assert!(check(r#"plan starts_with "p" and plan contains "r""#, &c));
        // Missing attributes: every comparison is false, `!=` too; `exists` tells.
        assert!(!check(r#"city = "Berlin""#, &c));
        assert!(!check(r#"city != "Berlin""#, &c));
        assert!(check("not city exists", &c));
        assert!(check("plan exists", &c));
        // A number against text that is not one.
        assert!(!check("plan > 3", &c));
        assert!(check("plan != 3", &c));
    }

    #[test]
    fn precedence_parentheses_and_keywords_in_any_case() {
        let c = contact("a@b.example", &[("x", "1"), ("y", "2")]);
        assert!(check("x = 1 or x = 5 and y = 9", &c), "and binds tighter");
        assert!(!check("(x = 1 or x = 5) and y = 9", &c));
        assert!(check("NOT (x = 5) AND y = 2", &c));
        assert!(check("not not x = 1", &c));
    }

    #[test]
    fn display_round_trips() {
        for f in [
            r#"plan = "pro" and (country in ("DE", "AT") or signups >= 3)"#,
            r#"not name contains "\"q\\" or x exists"#,
        ] {
            let parsed = Filter::parse(f).unwrap();
            assert_eq!(Filter::parse(&parsed.to_string()).unwrap(), parsed, "{f}");
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            ("", 1, "empty"),
            (r#"plan = "pro"#, 8, "not closed"),
            ("plan", 5, "expected an operator"),
            ("plan = ", 8, "expected a value"),
            (r#"plan = "a" and"#, 15, "expected a field name"),
            (r#"(plan = "a""#, 12, "expected \")\""),
            (r#"plan = "a")"#, 11, "unexpected"),
            ("plan ~ 3", 6, "unexpected character"),
            ("x in (1 2)", 9, "expected \",\" or \")\""),
            ("x contains 3", 12, "takes a string"),
            ("x = 1.2.3", 5, "not a number"),
            ("and = 1", 1, "expected a field name"),
        ];
        for (f, at, what) in cases {
            let e = Filter::parse(f).expect_err(f);
            assert_eq!(e.at, at, "{f}: {e}");
            assert!(e.reason.contains(what), "{f}: {e}");
        }
    }

    #[test]
    fn limits_hold() {
        let deep = format!("{}x = 1{}", "(".repeat(40), ")".repeat(40));
        assert!(Filter::parse(&deep).unwrap_err().reason.contains("nested"));
        let many = vec!["x = 1"; 300].join(" or ");
        assert!(
            Filter::parse(&many)
                .unwrap_err()
                .reason
                .contains("comparisons")
        );
        let long = format!(r#"x = "{}""#, "a".repeat(MAX_LEN));
        assert!(Filter::parse(&long).unwrap_err().reason.contains("longer"));
    }
}
