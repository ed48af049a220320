//! Deterministic template drafts: the embedded adapter of the content-model port.
//!
//! The same brief always gives the same template. Brief text is data, never template
//! code: it is wrapped in raw blocks so `{{ ... }}` typed into a brief cannot read
//! recipient variables.

use crate::ports::content::{ContentError, ContentModel, DraftBrief, Tone};
use crate::template::{CompiledTemplate, Template};
use async_trait::async_trait;

/// Drafts built from fixed phrasings per tone.
#[derive(Debug, Default, Clone, Copy)]
pub struct TemplateDrafts;

fn field<'a>(name: &'static str, value: &'a str, max: usize) -> Result<&'a str, ContentError> {
    let value = value.trim();
    let bad = |reason: &str| ContentError::InvalidBrief {
        field: name,
        reason: reason.into(),
    };
    if value.is_empty() {
        return Err(bad("is empty"));
    }
    if value.chars().count() > max {
        return Err(bad(&format!("is longer than {max} characters")));
    }
    if value.contains(['\r', '\n']) {
        return Err(bad("holds a line break"));
    }
    if value.contains("endraw") {
        return Err(bad("contains the reserved word `endraw`"));
    }
    Ok(value)
}

fn raw(text: &str) -> String {
    format!("{{% raw %}}{text}{{% endraw %}}")
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl TemplateDrafts {
    /// Drafts a template without going through the async port.
    pub fn draft_now(&self, brief: &DraftBrief) -> Result<Template, ContentError> {
        let product = field("product", &brief.product, 120)?;
        let audience = field("audience", &brief.audience, 120)?;
        let offer = field("offer", &brief.offer, 200)?;
        let url = match &brief.call_to_action_url {
            Some(u) => {
                let u = field("call_to_action_url", u, 2000)?;
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(ContentError::InvalidBrief {
                        field: "call_to_action_url",
                        reason: "must start with http:// or https://".into(),
                    });
                }
                Some(u)
            }
            None => None,
        };
        let (greeting, opener, closing) = match brief.tone {
            Tone::Friendly => ("Hi", "we picked something for you", "See you soon"),
            Tone::Formal => ("Dear", "we are pleased to present", "Kind regards"),
            Tone::Urgent => ("Hi", "this won't last long", "Don't miss out"),
        };
        let subject = format!("{{{{ first_name }}}}, {}: {}", raw(product), raw(offer));
        let mut text = format!(
            "{greeting} {{{{ first_name }}}},\n\nAs one of our {}, {opener}: {}.\n{}\n",
            raw(audience),
            raw(product),
            raw(offer)
        );
        let mut html = format!(
            "<p>{greeting} {{{{ first_name }}}},</p><p>As one of our {}, {opener}: <strong>{}</strong>.</p><p>{}</p>",
            raw(&html_escape(audience)),
            raw(&html_escape(product)),
            raw(&html_escape(offer))
        );
        if let Some(u) = url {
            text.push_str(&format!("\n{}\n", raw(u)));
            html.push_str(&format!(
                "<p><a href=\"{}\">Take a look</a></p>",
                raw(&html_escape(u))
            ));
        }
        text.push_str(&format!("\n{closing}\n"));
        html.push_str(&format!("<p>{closing}</p>"));
        let template = Template {
            subject,
            text: Some(text),
            html: Some(html),
        };
        CompiledTemplate::compile(&template).map_err(|e| ContentError::Unusable {
            provider: "drafts".into(),
            reason: e.to_string(),
        })?;
        Ok(template)
    }
}

#[async_trait]
impl ContentModel for TemplateDrafts {
    fn name(&self) -> &str {
        "drafts"
    }

    async fn draft(&self, brief: &DraftBrief) -> Result<Template, ContentError> {
        self.draft_now(brief)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmailAddress, Recipient};

    fn brief() -> DraftBrief {
        DraftBrief {
            product: "the spring collection".into(),
            audience: "returning customers".into(),
            offer: "20% off until Sunday".into(),
            tone: Tone::Friendly,
            call_to_action_url: Some("https://shop.example/spring?a=1&b=2".into()),
        }
    }

    fn render(t: &Template) -> crate::template::Rendered {
        let r = Recipient {
            email: EmailAddress::parse("ann@example.com").unwrap(),
            vars: [("first_name".to_string(), "Ann".to_string())].into(),
        };
        CompiledTemplate::compile(t).unwrap().render(&r).unwrap()
    }

    #[test]
    fn drafts_are_deterministic_and_personalised() {
        let t = TemplateDrafts.draft_now(&brief()).unwrap();
        assert_eq!(t, TemplateDrafts.draft_now(&brief()).unwrap());
        let r = render(&t);
        assert_eq!(
            r.subject,
            "Ann, the spring collection: 20% off until Sunday"
        );
        assert!(
            r.html
                .unwrap()
                .contains("href=\"https://shop.example/spring?a=1&amp;b=2\"")
        );
    }

    #[test]
    fn brief_text_is_data_not_template_code() {
        let mut b = brief();
        b.offer = "{{ email }} wins".into();
        let r = render(&TemplateDrafts.draft_now(&b).unwrap());
        assert!(r.subject.contains("{{ email }} wins"), "{}", r.subject);
    }

    #[test]
    fn bad_briefs_name_the_field() {
        let mut b = brief();
        b.product = "a\r\nBcc: x@y.org".into();
        let err = TemplateDrafts.draft_now(&b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "brief field product is invalid: holds a line break"
        );
        let mut b = brief();
        b.call_to_action_url = Some("javascript:alert(1)".into());
        assert!(matches!(
            TemplateDrafts.draft_now(&b),
            Err(ContentError::InvalidBrief {
                field: "call_to_action_url",
                ..
            })
        ));
    }
}
