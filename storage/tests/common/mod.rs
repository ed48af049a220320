//! What the store tests share.

/// The migrations `dialect` ships, as the bookkeeping table lists them once applied:
/// every file of `migrations/<dialect>/`, by number.
pub fn shipped(dialect: &str) -> Vec<(i64, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    let mut out: Vec<(i64, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| {
            let (n, name) = f.strip_suffix(".sql")?.split_once('_')?;
            Some((n.parse().ok()?, name.to_string()))
        })
        .collect();
    out.sort();
    out
}
