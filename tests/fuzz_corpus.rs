//! Replays the fuzz corpora (`fuzz/corpus/<target>/`) and any saved failing inputs
//! (`fuzz/artifacts/<target>/`) through the same checks the fuzz targets run, so every input the
//! fuzzers found interesting stays a regression test on the stable toolchain.

use std::path::Path;

#[path = "../fuzz/checks.rs"]
mod checks;

type Check = fn(&[u8]);

const TARGETS: &[(&str, Check)] = &[
    ("request_head", checks::request_head),
    ("response_head", checks::response_head),
    ("chunked", checks::chunked),
    ("static_path", checks::static_path),
    ("cache_rules", checks::cache_rules),
    ("wsgo_headers", checks::wsgo_headers),
    ("cron", checks::cron),
    ("proxy_header", checks::proxy_header),
];

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("readable")))
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_input_passes_its_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (target, check) in TARGETS {
        let corpus = inputs(&root.join("corpus").join(target));
        assert!(!corpus.is_empty(), "no corpus for {target}: run scripts/fuzz.sh");
        for (name, data) in corpus.iter().chain(inputs(&root.join("artifacts").join(target)).iter()) {
            let result = std::panic::catch_unwind(|| check(data));
            assert!(result.is_ok(), "{target}/{name} fails its checks");
            total += 1;
        }
    }
    assert!(total >= TARGETS.len());
}
