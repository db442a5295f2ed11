//! segment-dump: print a streamlog store folder or one of its files, verify every checksum, and
//! exit with status 1 when anything committed is corrupt.
//!
//! Usage: segment-dump [--json] [--summary] <store folder or file>

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut json = false;
    let mut records = true;
    let mut path: Option<PathBuf> = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--json" => json = true,
            "--summary" => records = false,
            "-h" | "--help" => {
                println!("usage: segment-dump [--json] [--summary] <store folder or file>");
                return ExitCode::SUCCESS;
            }
            other if path.is_none() => path = Some(PathBuf::from(other)),
            other => {
                eprintln!("segment-dump: unexpected argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("usage: segment-dump [--json] [--summary] <store folder or file>");
        return ExitCode::from(2);
    };
    if !path.exists() {
        eprintln!("segment-dump: {} does not exist", path.display());
        return ExitCode::from(2);
    }
    let dump = streamlog::dump::dump_path(&path, records);
    if json {
        let out = serde_json::json!({
            "path": path,
            "files": dump.json,
            "corruption": dump.corruption,
            "notes": dump.notes,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print!("{}", dump.text);
    }
    if dump.corruption.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "segment-dump: {} corruption(s) found",
            dump.corruption.len()
        );
        ExitCode::from(1)
    }
}
