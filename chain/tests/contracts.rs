//! The committed contract artifacts are what the committed sources compile to, with the
//! pinned solc (`scripts/contracts.sh check` compiles them afresh and compares).

use std::path::Path;
use std::process::Command;

#[test]
fn committed_artifacts_match_the_contract_sources() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/contracts.sh"))
        .arg("check")
        .output()
        .expect("bash runs scripts/contracts.sh (it needs node and npm)");
    assert!(
        out.status.success(),
        "artifacts differ from the sources or solc could not run:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["AnchorRegistry", "RewardDistributor", "RewardToken"] {
        let path = root.join(format!("chain/contracts/artifacts/{name}.json"));
        let text = std::fs::read_to_string(&path).expect("artifact readable");
        assert!(text.contains("\"deployedBytecode\": \"0x"), "{name}");
    }
}
