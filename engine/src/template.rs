//! Campaign templates rendered per recipient with minijinja.
//!
//! Rendering is strict: a variable the template uses but the recipient lacks is an
//! error naming the variable, never an empty string. Rendered header values are checked
//! for CR/LF so personalisation can never inject headers.
//!
//! Templates come from tenants and run on shared senders, so what one render may cost
//! is bounded ([`TemplateLimits`]):
//! - **time**: every render has a fuel budget of template instructions;
//! - **output**: a render that writes more than its cap stops with an error;
//! - **memory**: the language is a subset of Jinja without the constructs that make
//!   a value larger than its inputs (`~`, `*`, `**`, `+` except with a number literal,
//!   capturing `set` blocks, macros, `call` and `filter` blocks, imports and the
//!   filters that multiply their input such as `replace`, `join` or `tojson`), and
//!   `range` is capped, so what a render holds stays near the size of the template and
//!   the recipient's variables. A template using them is refused when it is created,
//!   with the construct and where it is.

use crate::domain::recipient::Recipient;
use minijinja::machinery::{Token, WhitespaceConfig, tokenize};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io;

/// The parts of a campaign message before personalisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

/// A template that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template has neither a text nor an HTML part")]
    NoBody,
    #[error("{part} template does not parse: {message}")]
    Syntax { part: &'static str, message: String },
    #[error("{part} template is {size} bytes, over the limit of {limit}")]
    TooLarge {
        part: &'static str,
        size: usize,
        limit: usize,
    },
    #[error(
        "{part} template uses {construct} (line {line}), which Maily templates do not allow: {why}"
    )]
    Forbidden {
        part: &'static str,
        construct: String,
        line: u32,
        why: &'static str,
    },
}

/// Why one recipient's message could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "template uses variable `{name}` in the {part}, but the recipient has no such variable"
    )]
    UnknownVariable { name: String, part: &'static str },
    #[error("variable `{variable}` holds a line break, which would inject headers into {header}")]
    HeaderInjection {
        header: &'static str,
        variable: String,
    },
    #[error("{part} failed to render: {message}")]
    Render { part: &'static str, message: String },
    #[error("{part} ran out of its budget of {fuel} template instructions")]
    OutOfFuel { part: &'static str, fuel: u64 },
    #[error("{part} rendered more than the limit of {limit} bytes")]
    TooLong { part: &'static str, limit: usize },
}

/// What one template and one render of it may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLimits {
    /// Largest source of one part, in bytes.
    pub max_source_bytes: usize,
    /// Template instructions one part's render may execute.
    pub fuel: u64,
    /// Largest rendered part, in bytes.
    pub max_output_bytes: usize,
}

impl Default for TemplateLimits {
    /// 256 KiB of source, 200,000 instructions and 2 MiB of output per part.
    fn default() -> Self {
        TemplateLimits {
            max_source_bytes: 256 * 1024,
            fuel: 200_000,
            max_output_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Filters a template may use: none of them returns a value much larger than its
/// input. (`safe` marks, `escape` would multiply: HTML parts are escaped on output.)
const FILTERS: &[&str] = &[
    "abs", "attr", "bool", "count", "d", "default", "first", "float", "int", "last", "length",
    "lower", "max", "min", "reject", "reverse", "round", "safe", "select", "sort", "sum", "title",
    "trim", "unique", "upper",
];

/// Statements that capture or import rendered output.
const STATEMENTS: &[&str] = &[
    "macro", "call", "filter", "include", "import", "from", "extends", "block",
];

/// Functions a template may call; `range` is capped at [`MAX_RANGE`] items.
const FUNCTIONS: &[&str] = &["range", "dict"];

/// The most items `range` returns in a template.
const MAX_RANGE: u32 = 1_000;

fn forbidden(part: &'static str, construct: String, line: u32, why: &'static str) -> TemplateError {
    TemplateError::Forbidden {
        part,
        construct,
        line,
        why,
    }
}

/// Refuses the constructs that let a render build values far larger than its inputs
/// (see the module docs), reading the template's tokens as the parser does.
fn check_constructs(part: &'static str, source: &str) -> Result<(), TemplateError> {
    let tokens: Vec<(Token<'_>, u32)> =
        tokenize(source, false, SyntaxConfig, WhitespaceConfig::default())
            .map(|t| t.map(|(tok, span)| (tok, u32::from(span.start_line))))
            .collect::<Result<_, _>>()
            .map_err(|e| TemplateError::Syntax {
                part,
                message: e.to_string(),
            })?;
    let number = |t: Option<&(Token<'_>, u32)>| {
        matches!(
            t.map(|(t, _)| t),
            Some(Token::Int(_) | Token::Int128(_) | Token::Float(_))
        )
    };
    for (i, (token, line)) in tokens.iter().enumerate() {
        let line = *line;
        let next = tokens.get(i + 1).map(|(t, _)| t);
        match token {
            Token::Tilde => {
                return Err(forbidden(
                    part,
                    "`~`".into(),
                    line,
                    "write the parts one after the other instead",
                ));
            }
            Token::Mul | Token::Pow => {
                return Err(forbidden(
                    part,
                    format!(
                        "`{}`",
                        if matches!(token, Token::Mul) {
                            "*"
                        } else {
                            "**"
                        }
                    ),
                    line,
                    "it repeats strings and lists",
                ));
            }
            Token::Plus if !(number(tokens.get(i + 1)) || i > 0 && number(tokens.get(i - 1))) => {
                return Err(forbidden(
                    part,
                    "`+` between two values".into(),
                    line,
                    "it joins strings and lists; add a number literal only",
                ));
            }
            Token::Pipe => {
                if let Some(Token::Ident(name)) = next
                    && !FILTERS.contains(name)
                {
                    return Err(forbidden(
                        part,
                        format!("the filter `{name}`"),
                        line,
                        "only filters that cannot enlarge a value are available",
                    ));
                }
            }
            Token::BlockStart => match next {
                Some(Token::Ident(name)) if STATEMENTS.contains(name) => {
                    return Err(forbidden(
                        part,
                        format!("`{{% {name} %}}`"),
                        line,
                        "it captures or imports rendered output",
                    ));
                }
                Some(Token::Ident("set")) => {
                    // `{% set x = ... %}` assigns; `{% set x %}...{% endset %}` captures.
                    let assigns = tokens[i + 2..]
                        .iter()
                        .map(|(t, _)| t)
                        .take_while(|t| !matches!(t, Token::BlockEnd))
                        .any(|t| matches!(t, Token::Assign));
                    if !assigns {
                        return Err(forbidden(
                            part,
                            "a `{% set %}` block".into(),
                            line,
                            "it captures rendered output; assign with `{% set x = ... %}`",
                        ));
                    }
                }
                _ => {}
            },
            Token::Ident(name @ ("namespace" | "debug"))
                if matches!(next, Some(Token::ParenOpen))
                    && !(i > 0 && matches!(tokens[i - 1].0, Token::Dot)) =>
            {
                return Err(forbidden(
                    part,
                    format!("`{name}()`"),
                    line,
                    "it is not available in Maily templates",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `range` capped at [`MAX_RANGE`] items.
fn capped_range(
    lower: u32,
    upper: Option<u32>,
    step: Option<u32>,
) -> Result<Value, minijinja::Error> {
    let (lo, hi) = match upper {
        Some(hi) => (lower, hi),
        None => (0, lower),
    };
    let step = step.unwrap_or(1).max(1);
    let items: Vec<u32> = (lo..hi)
        .step_by(step as usize)
        .take(MAX_RANGE as usize + 1)
        .collect();
    if items.len() > MAX_RANGE as usize {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("range is limited to {MAX_RANGE} items in Maily templates"),
        ));
    }
    Ok(Value::from(items))
}

/// A writer that fails once more than `limit` bytes were written to it.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("output limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Variables every recipient has without setting them.
pub const BUILTIN_VARS: [&str; 1] = ["email"];

/// A rendered message's personalised parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

const PARTS: [(&str, &str); 3] = [
    ("subject", "subject.txt"),
    ("text part", "body.txt"),
    ("HTML part", "body.html"),
];

/// A template compiled once per campaign and rendered for each recipient.
pub struct CompiledTemplate {
    env: Environment<'static>,
    limits: TemplateLimits,
    /// Variables used by each present part, in [`PARTS`] order.
    vars: Vec<(usize, BTreeSet<String>)>,
}

impl CompiledTemplate {
    /// Parses all parts under the default [`TemplateLimits`], reporting the first
    /// error with its part.
    pub fn compile(t: &Template) -> Result<Self, TemplateError> {
        Self::compile_with(t, TemplateLimits::default())
    }

    /// Parses all parts, refusing sources over `limits` and the constructs Maily
    /// templates leave out (see the module docs).
    pub fn compile_with(t: &Template, limits: TemplateLimits) -> Result<Self, TemplateError> {
        if t.text.is_none() && t.html.is_none() {
            return Err(TemplateError::NoBody);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(limits.fuel));
        env.add_function("range", capped_range);
        let sources = [Some(&t.subject), t.text.as_ref(), t.html.as_ref()];
        let mut vars = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let Some(source) = source else { continue };
            let (part, name) = PARTS[i];
            if source.len() > limits.max_source_bytes {
                return Err(TemplateError::TooLarge {
                    part,
                    size: source.len(),
                    limit: limits.max_source_bytes,
                });
            }
            check_constructs(part, source)?;
            env.add_template_owned(name, source.to_string())
                .map_err(|e| TemplateError::Syntax {
                    part,
                    message: e.to_string(),
                })?;
            let used = env
                .get_template(name)
                .map(|t| t.undeclared_variables(false))
                .map_err(|e| TemplateError::Syntax {
                    part,
                    message: e.to_string(),
                })?;
            // Functions of the environment are not the recipient's variables.
            let used = used
                .into_iter()
                .filter(|v| !FUNCTIONS.contains(&v.as_str()));
            vars.push((i, used.collect()));
        }
        Ok(CompiledTemplate { env, limits, vars })
    }

    /// Every variable the template uses, built-ins excluded.
    pub fn variables(&self) -> BTreeSet<String> {
        self.vars
            .iter()
            .flat_map(|(_, v)| v.iter().cloned())
            .filter(|v| !BUILTIN_VARS.contains(&v.as_str()))
            .collect()
    }

    /// Renders the message for one recipient.
    pub fn render(&self, recipient: &Recipient) -> Result<Rendered, RenderError> {
        for (i, used) in &self.vars {
            if let Some(name) = used.iter().find(|v| {
                !recipient.vars.contains_key(v.as_str()) && !BUILTIN_VARS.contains(&v.as_str())
            }) {
                return Err(RenderError::UnknownVariable {
                    name: name.clone(),
                    part: PARTS[*i].0,
                });
            }
        }
        let mut ctx: BTreeMap<&str, Value> = recipient
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), Value::from(v.as_str())))
            .collect();
        ctx.insert("email", Value::from(recipient.email.as_str()));
        let mut out = [None, None, None];
        for (i, used) in &self.vars {
            let (part, name) = PARTS[*i];
            let rendered = self.render_part(part, name, &ctx)?;
            if *i == 0 && rendered.contains(['\r', '\n']) {
                let variable = used
                    .iter()
                    .find(|v| {
                        recipient
                            .vars
                            .get(v.as_str())
                            .is_some_and(|val| val.contains(['\r', '\n']))
                    })
                    .cloned()
                    .unwrap_or_else(|| "(template text)".into());
                return Err(RenderError::HeaderInjection {
                    header: "Subject",
                    variable,
                });
            }
            out[*i] = Some(rendered);
        }
        let [subject, text, html] = out;
        Ok(Rendered {
            subject: subject.unwrap_or_default(),
            text,
            html,
        })
    }

    /// One part, within the fuel and output limits.
    fn render_part(
        &self,
        part: &'static str,
        name: &str,
        ctx: &BTreeMap<&str, Value>,
    ) -> Result<String, RenderError> {
        let failed = |e: minijinja::Error| RenderError::Render {
            part,
            message: e.to_string(),
        };
        let template = self.env.get_template(name).map_err(failed)?;
        let mut out = Capped {
            out: Vec::new(),
            limit: self.limits.max_output_bytes,
            over: false,
        };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => {}
            Err(_) if out.over => {
                return Err(RenderError::TooLong {
                    part,
                    limit: self.limits.max_output_bytes,
                });
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => {
                return Err(RenderError::OutOfFuel {
                    part,
                    fuel: self.limits.fuel,
                });
            }
            Err(e) => return Err(failed(e)),
        }
        String::from_utf8(out.out).map_err(|_| RenderError::Render {
            part,
            message: "the output is not UTF-8".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmailAddress;

    fn recipient(vars: &[(&str, &str)]) -> Recipient {
        Recipient {
            email: EmailAddress::parse("ann@example.com").unwrap(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn template() -> CompiledTemplate {
        CompiledTemplate::compile(&Template {
            subject: "Hello {{ first_name }}".into(),
            text: Some("Hi {{ first_name }}, your code is {{ code }} ({{ email }})".into()),
            html: Some("<p>Hi {{ first_name }}</p>".into()),
        })
        .unwrap()
    }

    #[test]
    fn renders_personalised_parts_and_escapes_html() {
        let r = template()
            .render(&recipient(&[("first_name", "<Ann>"), ("code", "42")]))
            .unwrap();
        assert_eq!(r.subject, "Hello <Ann>");
        assert_eq!(
            r.text.unwrap(),
            "Hi <Ann>, your code is 42 (ann@example.com)"
        );
        assert_eq!(r.html.unwrap(), "<p>Hi &lt;Ann&gt;</p>");
    }

    #[test]
    fn unknown_variable_is_named() {
        let err = template()
            .render(&recipient(&[("first_name", "Ann")]))
            .unwrap_err();
        assert_eq!(
            err,
            RenderError::UnknownVariable {
                name: "code".into(),
                part: "text part"
            }
        );
        assert!(err.to_string().contains("`code`"));
    }

    #[test]
    fn line_break_in_a_subject_variable_is_refused() {
        let err = template()
            .render(&recipient(&[
                ("first_name", "Ann\r\nBcc: victim@example.org"),
                ("code", "1"),
            ]))
            .unwrap_err();
        assert_eq!(
            err,
            RenderError::HeaderInjection {
                header: "Subject",
                variable: "first_name".into()
            }
        );
    }

    #[test]
    fn syntax_errors_name_the_part() {
        let err = CompiledTemplate::compile(&Template {
            subject: "ok".into(),
            text: Some("{% if %}".into()),
            html: None,
        })
        .err()
        .unwrap();
        assert!(matches!(
            err,
            TemplateError::Syntax {
                part: "text part",
                ..
            }
        ));
    }

    fn text(source: &str) -> Result<CompiledTemplate, TemplateError> {
        CompiledTemplate::compile(&Template {
            subject: "s".into(),
            text: Some(source.into()),
            html: None,
        })
    }

    #[test]
    fn constructs_that_enlarge_values_are_refused_with_where() {
        for (source, construct) in [
            ("{{ 'x' * 100000000 }}", "`*`"),
            ("{{ first_name ~ first_name }}", "`~`"),
            ("{{ first_name + first_name }}", "`+` between two values"),
            ("{{ 2 ** 64 }}", "`**`"),
            (
                "{{ first_name|replace('a', 'aaaa') }}",
                "the filter `replace`",
            ),
            ("{{ first_name|join(first_name) }}", "the filter `join`"),
            (
                "{% set a %}{{ b }}{{ b }}{% endset %}",
                "a `{% set %}` block",
            ),
            ("{% macro m() %}x{% endmacro %}", "`{% macro %}`"),
            ("{% filter upper %}x{% endfilter %}", "`{% filter %}`"),
            ("{% set ns = namespace(a='x') %}", "`namespace()`"),
        ] {
            match text(&format!("line one\n{source}")) {
                Err(TemplateError::Forbidden {
                    construct: c,
                    line,
                    part,
                    ..
                }) => {
                    assert_eq!(c, construct, "{source}");
                    assert_eq!((line, part), (2, "text part"), "{source}");
                }
                Err(e) => panic!("{source}: {e}"),
                Ok(_) => panic!("{source} was accepted"),
            }
        }
    }

    #[test]
    fn everyday_templates_still_compile_and_render() {
        let t = text(
            "{% set greeting = 'Hi' %}{{ greeting }} {{ first_name|title|default('there') }}\n\
             {% for c in code %}{{ loop.index + 1 }}:{{ c|upper }} {% endfor %}\n\
             {% if code|length > 2 and first_name is defined %}long{% endif %}\n\
             {% for i in range(3) %}{{ i - 1 }}{% endfor %}",
        )
        .unwrap();
        let r = t
            .render(&recipient(&[("first_name", "ann"), ("code", "abc")]))
            .unwrap();
        assert_eq!(r.text.unwrap(), "Hi Ann\n2:A 3:B 4:C \nlong\n-101");
    }

    #[test]
    fn a_render_stops_at_its_fuel_and_its_output_cap() {
        let limits = TemplateLimits {
            fuel: 10_000,
            ..TemplateLimits::default()
        };
        let nested = Template {
            subject: "s".into(),
            text: Some(
                "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}\
                 {% endfor %}{% endfor %}{% endfor %}"
                    .into(),
            ),
            html: None,
        };
        let err = CompiledTemplate::compile_with(&nested, limits)
            .unwrap()
            .render(&recipient(&[]))
            .unwrap_err();
        assert_eq!(
            err,
            RenderError::OutOfFuel {
                part: "text part",
                fuel: 10_000
            }
        );

        let limits = TemplateLimits {
            max_output_bytes: 1000,
            ..TemplateLimits::default()
        };
        let long = Template {
            subject: "s".into(),
            text: Some("{% for a in range(1000) %}{{ first_name }}{% endfor %}".into()),
            html: None,
        };
        let err = CompiledTemplate::compile_with(&long, limits)
            .unwrap()
            .render(&recipient(&[("first_name", "0123456789")]))
            .unwrap_err();
        assert_eq!(
            err,
            RenderError::TooLong {
                part: "text part",
                limit: 1000
            }
        );
        assert!(matches!(
            text("{{ range(5000)|length }}")
                .unwrap()
                .render(&recipient(&[])),
            Err(RenderError::Render { .. })
        ));
        let huge = "x".repeat(300 * 1024);
        assert!(matches!(text(&huge), Err(TemplateError::TooLarge { .. })));
    }
}
