//! Amazon SES: its event notifications (JSON, delivered by email through SNS or as the
//! body of a feedback message: `notificationType` Bounce or Delivery), and its DSNs,
//! whose Diagnostic-Code wraps the remote reply in its own status ("5.1.0 - Unknown
//! address error 550-'5.7.1 ...'").

use super::{Delivery, Parsed, finish};
use crate::report::Action;
use crate::report::dsn::parse_diagnostic;
use crate::report::mail::Mail;
use serde_json::Value;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if mail.mentions(&["notificationType"]) {
        return notification(mail);
    }
    let from = mail.header("from").to_ascii_lowercase();
    if from.contains("amazonses.com") && !mail.status_parts.is_empty() {
        let mut parsed = super::rfc3464::parse(mail)?;
        for d in &mut parsed.deliveries {
            if let Some(i) = d.diagnostic.find("address error ") {
                d.diagnostic = d.diagnostic[i + "address error ".len()..]
                    .trim_matches(['\'', ' '])
                    .replace("550-'", "550 ");
                d.status = super::find_status(&d.diagnostic).or(d.status);
            }
        }
        return Some(parsed);
    }
    None
}

/// An SES event notification in JSON.
fn notification(mail: &Mail) -> Option<Parsed> {
    let start = mail.text.find('{')?;
    let end = mail.text.rfind('}')?;
    // Mail systems wrap long lines, even inside JSON strings.
    let json: String = mail
        .text
        .get(start..=end)?
        .chars()
        .filter(|c| *c != '\n')
        .collect();
    let mut event: Value = serde_json::from_str(&json).ok()?;
    // Through SNS the event is a string inside the notification envelope.
    if let Some(inner) = event.get("Message").and_then(Value::as_str) {
        event = serde_json::from_str(inner).ok()?;
    }
    let deliveries: Vec<Delivery> = match event.get("notificationType").and_then(Value::as_str)? {
        "Bounce" => {
            let bounce = event.get("bounce")?;
            let transient = bounce.get("bounceType").and_then(Value::as_str) == Some("Transient");
            let remote = bounce
                .get("reportingMTA")
                .and_then(Value::as_str)
                .map(crate::report::dsn::typed_name);
            bounce
                .get("bouncedRecipients")?
                .as_array()?
                .iter()
                .take(crate::report::MAX_RECIPIENTS)
                .filter_map(|r| {
                    let recipient = r.get("emailAddress")?.as_str()?.to_string();
                    let diag = r
                        .get("diagnosticCode")
                        .and_then(Value::as_str)
                        .map(parse_diagnostic);
                    Some(Delivery {
                        recipient,
                        action: Some(if transient {
                            Action::Delayed
                        } else {
                            Action::Failed
                        }),
                        status: r
                            .get("status")
                            .and_then(Value::as_str)
                            .and_then(super::find_status),
                        reply_code: diag.as_ref().and_then(|d| d.reply.as_ref()).map(|r| r.code),
                        diagnostic: diag.as_ref().map(|d| d.text.clone()).unwrap_or_default(),
                        diagnostic_type: diag.and_then(|d| d.kind),
                        remote_host: remote.clone(),
                        ..Delivery::default()
                    })
                })
                .collect()
        }
        "Delivery" => {
            let delivery = event.get("delivery")?;
            let response = delivery
                .get("smtpResponse")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let remote = delivery
                .get("remoteMtaIp")
                .and_then(Value::as_str)
                .map(str::to_string);
            delivery
                .get("recipients")?
                .as_array()?
                .iter()
                .take(crate::report::MAX_RECIPIENTS)
                .filter_map(|r| {
                    Some(Delivery {
                        recipient: r.as_str()?.to_string(),
                        action: Some(Action::Delivered),
                        status: super::find_status(&response),
                        reply_code: super::find_reply_code(&format!(" {response}"))
                            .or_else(|| response.get(..3)?.parse().ok()),
                        diagnostic: response.clone(),
                        remote_host: remote.clone(),
                        ..Delivery::default()
                    })
                })
                .collect()
        }
        _ => return None,
    };
    finish(deliveries, None)
}
