//! Replays the fuzz seeds and every input a fuzz run ever crashed on (`fuzz/regressions/`)
//! through the same functions the fuzz targets call, so a fixed crash stays fixed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}: the seeds are missing");
}

#[test]
fn message() {
    replay("message", mostro_box::fuzzing::message);
}

#[test]
fn order() {
    replay("order", mostro_box::fuzzing::order);
}

#[test]
fn invoice() {
    replay("invoice", mostro_box::fuzzing::invoice);
}

#[test]
fn lnurl() {
    replay("lnurl", mostro_box::fuzzing::lnurl);
}

#[test]
fn config() {
    replay("config", mostro_box::fuzzing::config);
}

#[test]
fn policy() {
    replay("policy", mostro_box::fuzzing::policy);
}
