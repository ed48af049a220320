//! Apache James: "Error message below:" with the reply, and "Message details:" naming
//! the envelope (`RCPT TO: address`).

use super::{Delivery, Parsed, find_address, finish};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["Error message below:"])
        || !mail.mentions(&["Message details:"])
    {
        return None;
    }
    let error = super::after_marker(&mail.text, &["Error message below:"])?;
    let error = super::squash(super::before_marker(error, &["Message details:"]));
    let details = super::after_marker(&mail.text, &["Message details:"])?;
    let recipients: Vec<String> = details
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RCPT TO:"))
        .filter_map(find_address)
        .collect();
    let mut deliveries: Vec<Delivery> = recipients
        .into_iter()
        .map(|recipient| Delivery {
            recipient,
            diagnostic: error.clone(),
            ..Delivery::default()
        })
        .collect();
    // James reports on messages it accepted.
    super::after_acceptance(&mut deliveries);
    finish(deliveries, None)
}
