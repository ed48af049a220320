//! Gmail's own bounces: the old plain-text ones ("Delivery to the following recipient
//! failed permanently:", the addresses indented on lines of their own, then "Technical
//! details of permanent failure:" with the remote server's reply), and the current
//! ones when their delivery-status part names nobody ("** Message not delivered **",
//! an explanation, "The response was:", the recipients in X-Failed-Recipients).

use super::{Delivery, Layout, Parsed, contains_any, finish, leading_address};
use crate::report::Action;
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

const LAYOUT: Layout = Layout {
    begin: &["Delivery to the following recipient"],
    end: &[
        "----- Original message -----",
        "----- Message header follows -----",
    ],
};

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let from = mail.header("from").to_ascii_lowercase();
    if !(from.contains("@googlemail.com")
        || from.contains("@gmail.com")
        || from.contains("@google.com"))
        || super::has_dsn_recipients(mail)
    {
        return None;
    }
    // The begin marker's own line says whether it failed or is delayed.
    let Some(at) = mail.find(LAYOUT.begin[0], 0) else {
        return current(mail);
    };
    let delayed = mail.text[at..]
        .lines()
        .next()
        .is_some_and(|l| l.contains("delayed"));
    let (section, original) = LAYOUT.split(mail)?;
    let details = match crate::report::mail::find_ignore_case(section, "Technical details of") {
        Some(i) => &section[i..],
        None => "",
    };
    const SAID: &str = "The error that the other server returned was:";
    let error = match crate::report::mail::find_ignore_case(details, SAID) {
        Some(i) => {
            let heading = details.lines().next().unwrap_or("");
            format!("{heading} {}", &details[i + SAID.len()..])
        }
        None => details.to_string(),
    };
    let error = super::squash(&error);
    let connect_failed = contains_any(
        &error,
        &["did not accept our requests to connect", "socket error"],
    );
    let deliveries: Vec<Delivery> = section[..section.len() - details.len()]
        .lines()
        .filter(|l| l.starts_with([' ', '\t']))
        .filter_map(|l| leading_address(l).filter(|a| a.len() + 1 >= l.trim().len()))
        .map(|recipient| Delivery {
            recipient,
            action: Some(if delayed {
                Action::Delayed
            } else {
                Action::Failed
            }),
            diagnostic: error.clone(),
            // Gmail retried the connection until it gave up.
            reason: connect_failed.then_some(Reason::Expired),
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, original)
}

/// The current layout: recipients from X-Failed-Recipients, the explanation and the
/// response as the error.
fn current(mail: &Mail) -> Option<Parsed> {
    let failed = mail.header("x-failed-recipients");
    if failed.is_empty()
        || !mail.mentions(&[
            "The response was:",
            "The response from the remote server was:",
        ])
    {
        return None;
    }
    let text = match mail.find("** ", 0) {
        Some(i) => &mail.text[i..],
        None => mail.text.as_str(),
    };
    // The plain-text alternative ends where the HTML one's text begins.
    let text = super::before_marker(text, &["\n\n\n\n"]);
    let diagnostic = super::squash(text);
    let deliveries = failed
        .split(',')
        .map(|a| a.trim().trim_matches(['<', '>']))
        .filter(|a| super::is_address(a))
        .map(|a| Delivery {
            recipient: a.to_string(),
            diagnostic: diagnostic.clone(),
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, None)
}
