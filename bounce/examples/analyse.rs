//! Prints what the bounce analyser makes of each message given on the command line,
//! as JSON: `cargo run -p maily-engine --example analyse -- message.eml...`.

use maily_bounce::report::analyse;

fn main() {
    for path in std::env::args().skip(1) {
        let raw = match std::fs::read(&path) {
            Ok(raw) => raw,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        match analyse(&raw) {
            Ok(a) => println!(
                "{path}: {}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "kind": a.kind,
                    "format": a.format,
                    "findings": a.findings,
                    "original_message_id": a.original_message_id(),
                }))
                .unwrap_or_default()
            ),
            Err(e) => println!("{path}: not analysed: {e}"),
        }
    }
}
