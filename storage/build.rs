//! Lists each dialect's migrations from its folder (`migrations/<dialect>/NNNN_name.sql`),
//! so adding a schema change is adding one file per dialect. The build fails when a
//! folder's numbering has a gap or a duplicate, or when the two dialects are not at
//! the same number: the next change takes the same number in both.

use std::fs;
use std::path::Path;

fn main() {
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let mut counts = Vec::new();
    for dialect in ["sqlite", "postgres"] {
        let dir = Path::new("migrations").join(dialect);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<(i64, String, String)> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .map(|file| {
                let stem = file.trim_end_matches(".sql");
                let (number, name) = stem.split_once('_').unwrap_or_else(|| {
                    panic!("{dialect} migration {file}: expected NNNN_name.sql")
                });
                let version = number.parse().unwrap_or_else(|_| {
                    panic!("{dialect} migration {file}: {number} is not a number")
                });
                (version, name.to_string(), file.clone())
            })
            .collect();
        files.sort();
        for (i, (version, _, file)) in files.iter().enumerate() {
            assert_eq!(
                *version,
                i as i64 + 1,
                "{dialect} migration {file}: migrations are numbered 1, 2, 3... without gaps"
            );
        }
        let entries: String = files
            .iter()
            .map(|(version, name, file)| {
                format!(
                    "Migration {{ version: {version}, name: {name:?}, \
                     sql: include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \
                     \"/migrations/{dialect}/{file}\")) }},\n"
                )
            })
            .collect();
        fs::write(
            Path::new(&out).join(format!("{dialect}_migrations.rs")),
            format!("&[\n{entries}]\n"),
        )
        .expect("writing the migration list");
        counts.push((dialect, files.len()));
    }
    assert_eq!(
        counts[0].1, counts[1].1,
        "the dialects' migrations are out of step ({counts:?}): each schema change adds \
         one file to each, under the same number"
    );
}
