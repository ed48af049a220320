//! Campaign templates rendered per recipient with minijinja.
//!
//! Rendering is strict: a variable the template uses but the recipient lacks is an
//! error naming the variable, never an empty string. Rendered header values are checked
//! for CR/LF so personalisation can never inject headers.

use crate::domain::campaign::Recipient;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Variables used by each present part, in [`PARTS`] order.
    vars: Vec<(usize, BTreeSet<String>)>,
}

impl CompiledTemplate {
    /// Parses all parts, reporting the first syntax error with its part.
    pub fn compile(t: &Template) -> Result<Self, TemplateError> {
        if t.text.is_none() && t.html.is_none() {
            return Err(TemplateError::NoBody);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let sources = [Some(&t.subject), t.text.as_ref(), t.html.as_ref()];
        let mut vars = Vec::new();
        for (i, source) in sources.iter().enumerate() {
            let Some(source) = source else { continue };
            let (part, name) = PARTS[i];
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
            vars.push((i, used.into_iter().collect()));
        }
        Ok(CompiledTemplate { env, vars })
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
            let rendered = self
                .env
                .get_template(name)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| RenderError::Render {
                    part,
                    message: e.to_string(),
                })?;
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
}
