//! MailFoundry: "Unable to deliver message to: <address>", then "Delivery failed for
//! the following reason:" and the server's reply.

use super::{Delivery, Parsed, find_address, finish};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["Delivery failed for the following reason:"])
    {
        return None;
    }
    let mut deliveries: Vec<Delivery> = Vec::new();
    let mut reading = false;
    for line in mail.text.lines() {
        if let Some(i) = line.find("Unable to deliver message to:") {
            if let Some(a) = find_address(&line[i..]) {
                deliveries.push(Delivery {
                    recipient: a,
                    ..Delivery::default()
                });
            }
            reading = false;
            continue;
        }
        if line.contains("Delivery failed for the following reason:") {
            reading = true;
            continue;
        }
        if reading && let Some(d) = deliveries.last_mut() {
            if line.trim().is_empty() && !d.diagnostic.is_empty() {
                reading = false;
                continue;
            }
            d.diagnostic = super::squash(&format!("{} {}", d.diagnostic, line));
        }
    }
    // A filtering gateway: it refuses what it accepted.
    super::after_acceptance(&mut deliveries);
    finish(deliveries, None)
}
