//! Compiles the public protos (`proto/maily/v1/`) without protoc: protox parses them
//! into a descriptor set, which is kept for gRPC reflection and handed to
//! tonic-prost-build for the messages, the server traits and the clients.

use prost::Message as _;
use std::path::PathBuf;

const PROTOS: &[&str] = &["maily/v1/campaign_service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("maily_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .btree_map(".maily.v1.Recipient.variables")
        .btree_map(".maily.v1.KeyedMessage.variables")
        .compile_fds(fds)?;
    Ok(())
}
