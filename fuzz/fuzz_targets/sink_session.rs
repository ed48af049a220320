//! The inbound listener's SMTP session (the built-in server) fed arbitrary client
//! bytes over an in-memory pipe: it must never panic, must end when the input does,
//! must answer in proportion to what it was sent, and must let go of the connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maily_smtp::{SinkConfig, SinkHandle, SinkLimits, SmtpSink};
use std::net::SocketAddr;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    })
}

fn sink() -> &'static SinkHandle {
    static SINK: OnceLock<SinkHandle> = OnceLock::new();
    SINK.get_or_init(|| {
        runtime()
            .block_on(SmtpSink::start(SinkConfig {
                max_message_size: 4096,
                limits: SinkLimits {
                    max_concurrent_messages: 1,
                    ..SinkLimits::default()
                },
                ..SinkConfig::default()
            }))
            .expect("sink starts")
    })
}

fuzz_target!(|data: &[u8]| {
    let sink = sink();
    let peer: SocketAddr = "192.0.2.7:2525".parse().expect("address");
    let out = runtime().block_on(sink.converse(peer, data));
    assert!(out.starts_with(b"220 "));
    let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(out.len() <= 1024 + 512 * lines, "{} bytes for {lines} lines", out.len());
    assert_eq!(sink.open_connections(), 0);
    assert_eq!(sink.open_peers(), 0);
});
