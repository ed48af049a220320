//! The inbound listener end to end: bounces (DSN) to VERP return paths and a
//! complaint (ARF) to the feedback address arrive over SMTP, are attributed to the
//! messages the engine sent, suppress the addresses and show in the stats; broken
//! and forged reports are refused with a reason.

mod common;

use common::{Harness, header, row, run};
use maily_config::InboundSection;
use maily_engine::EmailAddress;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A minimal SMTP client: sends one message from the null sender and returns each
/// reply code, stopping at the first refusal.
async fn submit(addr: SocketAddr, rcpt: &str, data: &str) -> Vec<(u16, String)> {
    let stream = TcpStream::connect(addr).await.expect("listener reachable");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut replies = Vec::new();
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.expect("reply");
            text.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return (line[..3].parse().expect("code"), text);
            }
        }
    }
    let mut step = async |cmd: &str, r: &mut BufReader<_>| {
        w.write_all(cmd.as_bytes()).await.expect("write");
        reply(r).await
    };
    replies.push(reply(&mut r).await);
    for cmd in [
        "EHLO reporter.example\r\n".to_string(),
        "MAIL FROM:<>\r\n".to_string(),
        format!("RCPT TO:<{rcpt}>\r\n"),
        "DATA\r\n".to_string(),
    ] {
        let got = step(&cmd, &mut r).await;
        let stop = got.0 >= 400;
        replies.push(got);
        if stop {
            return replies;
        }
    }
    let body = data.replace("\r\n", "\n").replace('\n', "\r\n");
    let stuffed: String = body
        .split_inclusive("\r\n")
        .map(|l| {
            if l.starts_with('.') {
                format!(".{l}")
            } else {
                l.to_string()
            }
        })
        .collect();
    replies.push(step(&format!("{stuffed}.\r\n"), &mut r).await);
    replies
}

fn dsn(verp: &str, recipient: &str, message_id: &str) -> String {
    format!(
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\n\
         To: {verp}\n\
         Subject: Undelivered Mail Returned to Sender\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B0UND\"\n\
         \n\
         --B0UND\n\
         Content-Type: text/plain\n\
         \n\
         I'm sorry to have to inform you that your message could not be delivered.\n\
         \n\
         --B0UND\n\
         Content-Type: message/delivery-status\n\
         \n\
         Reporting-MTA: dns; mx.example.net\n\
         \n\
         Final-Recipient: rfc822; {recipient}\n\
         Action: failed\n\
         Status: 5.1.1\n\
         Remote-MTA: dns; mailbox.example.net\n\
         Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected:\n    User unknown in virtual mailbox table\n\
         \n\
         --B0UND\n\
         Content-Type: text/rfc822-headers\n\
         \n\
         Message-ID: {message_id}\n\
         To: <{recipient}>\n\
         \n\
         --B0UND--\n"
    )
}

fn arf(maily_id: &str, campaign: &str, recipient: &str) -> String {
    format!(
        "From: staff@hotmail.example\n\
         To: fbl@bounces.shop.example\n\
         Subject: complaint about message from 192.0.2.1\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"part1\"\n\
         \n\
         --part1\n\
         Content-Type: text/plain\n\
         \n\
         This is an email abuse report.\n\
         --part1\n\
         Content-Type: message/feedback-report\n\
         \n\
         Feedback-Type: abuse\n\
         User-Agent: SomeGenerator/1.0\n\
         Version: 1\n\
         Source-IP: 192.0.2.1\n\
         \n\
         --part1\n\
         Content-Type: message/rfc822\n\
         Content-Disposition: inline\n\
         \n\
         From: <news@shop.example>\n\
         To: <{recipient}>\n\
         Subject: Hello\n\
         X-Maily-Message-Id: {maily_id}\n\
         X-Maily-Campaign: {campaign}\n\
         \n\
         Buy now.\n\
         --part1--\n"
    )
}

#[test]
fn reports_to_verp_and_feedback_addresses_bounce_complain_and_suppress() {
    run(async {
        let h = Harness::start_with(HashMap::new(), |f| {
            f.merge(("verp.domain", "bounces.shop.example"))
                .merge(("verp.secret", "inbound-test-verp-secret"))
        })
        .await;
        let section = InboundSection {
            enabled: true,
            bind: "127.0.0.1:0".parse().unwrap(),
            hostname: "inbound.test".into(),
            complaint_addresses: vec!["fbl@bounces.shop.example".into()],
            max_message_size: 1 << 20,
            tls_cert: String::new(),
            tls_key: String::new(),
            max_connections: 500,
            max_connections_per_peer: 20,
            max_concurrent_messages: 32,
            max_concurrent_messages_per_peer: 2,
            session_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            min_data_rate: 1024,
            reports_per_peer_per_minute: 600,
        };
        let verp = h.settings.sender.composer.verp.clone();
        let listener =
            maily::inbound::start(&section, &h.ports, verp, h.settings.bounce_rules.clone())
                .await
                .unwrap();
        let c = h.campaign("reports").await;
        let report = h.intake.enqueue(&c, (0..5).map(row)).await.unwrap();
        h.wait_finished(&[(c.id, report.accepted)]).await;
        let sent = h.sink.received();
        assert_eq!(sent.len(), 5);
        let of = |i: usize| {
            let to = format!("person{i}@example.com");
            sent.iter()
                .find(|m| m.rcpt_to == [to.clone()])
                .cloned()
                .unwrap()
        };

        // Two bounces to the VERP return paths the messages went out with.
        for i in [0, 1] {
            let m = of(i);
            let recipient = format!("person{i}@example.com");
            let mid = header(&m, "Message-ID").unwrap();
            let replies = submit(
                listener.addr(),
                &m.mail_from,
                &dsn(&m.mail_from, &recipient, &mid),
            )
            .await;
            assert_eq!(replies.last().unwrap().0, 250, "{replies:?}");
        }
        // A complaint to the feedback address, attributed by the returned headers.
        let m = of(2);
        let maily_id = header(&m, "X-Maily-Message-Id").unwrap();
        let replies = submit(
            listener.addr(),
            "fbl@bounces.shop.example",
            &arf(&maily_id, &c.id.to_string(), "person2@example.com"),
        )
        .await;
        assert_eq!(replies.last().unwrap().0, 250, "{replies:?}");

        // A forged return path is refused at RCPT, before any data.
        let m = of(3);
        let forged = m.mail_from.replacen("person3", "person4", 1);
        let replies = submit(
            listener.addr(),
            &forged,
            &dsn(&forged, "person4@example.com", "<x@y>"),
        )
        .await;
        assert_eq!(replies.last().unwrap().0, 550, "{replies:?}");
        assert!(
            replies.last().unwrap().1.contains("not a return path"),
            "{replies:?}"
        );
        // A message that is not a report is refused with the reason.
        let replies = submit(
            listener.addr(),
            &m.mail_from,
            "Subject: a question\n\nWho sent this?\n",
        )
        .await;
        let (code, text) = replies.last().unwrap();
        assert_eq!(*code, 554, "{replies:?}");
        assert!(
            text.contains("not a bounce, complaint or automatic reply"),
            "{text}"
        );
        // An automatic reply (RFC 3834) is taken and acts on nothing.
        let replies = submit(
            listener.addr(),
            &m.mail_from,
            "From: person3@example.com\nAuto-Submitted: auto-replied\nSubject: Out of office\n\nI am away.\n",
        )
        .await;
        assert_eq!(replies.last().unwrap().0, 250, "{replies:?}");

        let deadline = Instant::now() + Duration::from_secs(30);
        let s = loop {
            let s = h.stats(c.id).await;
            if s.bounced_hard == 2 && s.complained == 1 {
                break s;
            }
            assert!(Instant::now() < deadline, "reports never counted: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(s.delivered, 5, "{s:?}");
        for i in 0..5 {
            let addr = EmailAddress::parse(&format!("person{i}@example.com")).unwrap();
            let suppressed = h.ports.store.is_suppressed(&h.tenant, &addr).await.unwrap();
            assert_eq!(suppressed, i < 3, "person{i}");
        }
        listener.shutdown().await;
        h.engine.shutdown().await;
    });
}
