//! Campaign messages of a chosen size: prose for the text and HTML parts, as plain text
//! or as a template with per-recipient variables, and the search for the fewest words
//! that make a message of at least a given size.

use crate::{sample_campaign_id, sample_message_id, sample_recipient, sample_sender};
use anyhow::{Context, Result};
use maily_engine::message::{self, Envelope};
use maily_engine::template::{CompiledTemplate, Rendered, Template};
use maily_engine::{EmailAddress, Timestamp};

/// The address in the message's `To:` header (the envelope recipients vary).
pub const HEADER_TO: &str = "reader@example.com";

/// What the prose says that differs per recipient: literal values, or the template
/// expressions that render them.
#[derive(Debug, Clone, Copy)]
pub struct Voice<'a> {
    pub name: &'a str,
    pub city: &'a str,
    pub code: &'a str,
}

impl Voice<'static> {
    /// One recipient's values, written out.
    pub const PLAIN: Voice<'static> = Voice {
        name: "Ann",
        city: "Lisbon",
        code: "M-000042",
    };
    /// The template expressions of [`crate::sample_recipient`]'s variables.
    pub const TEMPLATE: Voice<'static> = Voice {
        name: "{{ first_name }}",
        city: "{{ city }}",
        code: "{{ code }}",
    };
}

/// `words` words of campaign prose as a text part (lines under 72 characters,
/// paragraphs of 40 words) and as an HTML part (one `<p>` per paragraph).
pub fn body_text(words: usize, voice: Voice<'_>) -> (String, String) {
    const VOCABULARY: [&str; 24] = [
        "spring", "sale", "picks", "for", "you", "this", "week", "new", "arrivals", "in", "CITY",
        "free", "delivery", "on", "orders", "over", "fifty", "euros", "your", "code", "CODE",
        "ends", "Sunday", "shop",
    ];
    let mut text = format!("Hello {},\n\n", voice.name);
    let mut html = format!("<p>Hello {},</p>\n<p>", voice.name);
    let mut line = 0;
    for i in 0..words {
        // A fixed, varied walk through the vocabulary.
        let word = match VOCABULARY[(i * 7 + i / 24) % VOCABULARY.len()] {
            "CITY" => voice.city,
            "CODE" => voice.code,
            word => word,
        };
        if i > 0 && i % 40 == 0 {
            text.push_str("\n\n");
            html.push_str("</p>\n<p>");
            line = 0;
        } else if line + word.len() + 1 > 72 {
            text.push('\n');
            html.push(' ');
            line = 0;
        } else if line > 0 {
            text.push(' ');
            html.push(' ');
            line += 1;
        }
        text.push_str(word);
        html.push_str(word);
        line += word.len();
    }
    text.push_str(&format!("\n\nSee you in {}!\n", voice.city));
    html.push_str(&format!("</p>\n<p>See you in <b>{}</b>!</p>\n", voice.city));
    (text, html)
}

/// The campaign template whose text and HTML parts hold `words` words of prose, with
/// the variables of [`crate::sample_recipient`].
pub fn campaign_template(words: usize) -> Template {
    let (text, html) = body_text(words, Voice::TEMPLATE);
    Template {
        subject: "{{ first_name }}, spring sale picks for {{ city }}".into(),
        text: Some(text),
        html: Some(html),
    }
}

/// The fewest words for which `size_of(words)` reaches `size`; `size_of` must grow
/// with the words.
pub fn fewest_words(size: usize, mut size_of: impl FnMut(usize) -> Result<usize>) -> Result<usize> {
    let mut high = 16;
    while size_of(high)? < size {
        high *= 2;
    }
    let mut low = 0;
    while low < high {
        let mid = (low + high) / 2;
        if size_of(mid)? < size {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    Ok(low)
}

/// The sample campaign's envelope to `to`, with fixed ids and date.
fn envelope<'a>(from: &'a EmailAddress, to: &'a EmailAddress) -> Envelope<'a> {
    Envelope {
        message_id: sample_message_id(0),
        campaign: sample_campaign_id(1),
        from,
        from_name: Some("Maily News"),
        to,
        date: Timestamp(1_767_225_600_000),
    }
}

/// A campaign message (multipart/alternative, text and HTML, quoted-printable) of at
/// least `size` bytes: the smallest such message Maily builds from the sample
/// campaign's wording with enough paragraphs.
pub fn build_message(size: usize) -> Result<Vec<u8>> {
    let from = sample_sender();
    let to = EmailAddress::parse(HEADER_TO)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("the header recipient")?;
    let envelope = envelope(&from, &to);
    let build = |words: usize| {
        let (text, html) = body_text(words, Voice::PLAIN);
        let parts = Rendered {
            subject: "Ann, spring sale picks for Lisbon".into(),
            text: Some(text),
            html: Some(html),
        };
        message::build(&envelope, &parts)
    };
    let words = fewest_words(size, |words| Ok(build(words).len()))?;
    Ok(build(words))
}

/// The [`campaign_template`] with the fewest words whose message to
/// [`sample_recipient`] 0 is at least `size` bytes.
pub fn sized_campaign_template(size: usize) -> Result<Template> {
    let from = sample_sender();
    let recipient = sample_recipient(0);
    let envelope = envelope(&from, &recipient.email);
    let words = fewest_words(size, |words| {
        let rendered = CompiledTemplate::compile(&campaign_template(words))?.render(&recipient)?;
        Ok(message::build(&envelope, &rendered).len())
    })?;
    Ok(campaign_template(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_size_asked_for() {
        for size in [1_000, 4_096, 20_000] {
            let m = build_message(size).unwrap();
            assert!(
                m.len() >= size && m.len() < size + 200,
                "{size}: {}",
                m.len()
            );
        }
    }

    #[test]
    fn sized_templates_reach_the_size_asked_for() {
        let template = CompiledTemplate::compile(&sized_campaign_template(4096).unwrap()).unwrap();
        let from = sample_sender();
        let recipient = sample_recipient(0);
        let rendered = template.render(&recipient).unwrap();
        let len = message::build(&envelope(&from, &recipient.email), &rendered).len();
        assert!((4096..4096 + 100).contains(&len), "{len}");
    }

    #[test]
    fn the_template_renders_what_the_plain_prose_says() {
        let template = CompiledTemplate::compile(&campaign_template(300)).unwrap();
        let mut ann = sample_recipient(0);
        ann.vars.insert("first_name".into(), "Ann".into());
        ann.vars.insert("city".into(), "Lisbon".into());
        ann.vars.insert("code".into(), "M-000042".into());
        let rendered = template.render(&ann).unwrap();
        let (text, _) = body_text(300, Voice::PLAIN);
        // The line breaks follow the template's word lengths, so compare the words.
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(words(&rendered.text.unwrap()), words(&text));
    }
}
