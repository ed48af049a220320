//! Zoho Mail: one line per recipient, `address Reason, ERROR_CODE :550, ERROR_CODE
//! :5.1.1 text`, or in a delay notice `[Status: Error, Address: <address>,
//! ResponseCode 421, , text]`. A temporary failure Zoho stopped retrying expired.

use super::{Delivery, Parsed, contains_any, find_address, finish, leading_address};
use crate::report::Action;
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let from = mail.header("from").to_ascii_lowercase();
    if !from.contains("zoho")
        || super::has_dsn_recipients(mail)
        || !mail.mentions(&["ERROR_CODE", "ResponseCode"])
    {
        return None;
    }
    let delayed = contains_any(mail.header("subject"), &["(Delay)"]);
    let mut deliveries = Vec::new();
    for line in mail.text.lines() {
        let recipient = if let Some(i) = line.find("Address:") {
            find_address(&line[i..])
        } else if line.contains("ERROR_CODE") {
            leading_address(line)
        } else {
            None
        };
        let Some(recipient) = recipient else { continue };
        let text = line
            .replace(&recipient, "")
            .replace("ERROR_CODE :", "")
            .replace("ResponseCode", "")
            .replace("[Status: Error, Address: <>,", "");
        let text = super::squash(text.trim_matches(['[', ']', ' ']));
        let temporary = super::find_reply_code(&text).is_some_and(|c| c < 500);
        deliveries.push(Delivery {
            recipient,
            action: Some(if delayed {
                Action::Delayed
            } else {
                Action::Failed
            }),
            diagnostic: text,
            reason: temporary.then_some(Reason::Expired),
            ..Delivery::default()
        });
    }
    finish(deliveries, None)
}
