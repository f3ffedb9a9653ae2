//! Where the harness keeps its files: under the run folder of
//! `scripts/test.sh` (env `ZKMW_TEST_RUN_DIR`, whose cleanup then stops
//! anything a killed test left running there), or else under the system
//! temp dir; and names no other test uses.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A new, empty folder `zkmw-NAME-...` for a test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    scratch_folder(&format!("zkmw-{}", unique(name)))
}

/// Creates the folder `leaf` where [`scratch_dir`] puts its folders.
pub fn scratch_folder(leaf: &str) -> PathBuf {
    let base = match std::env::var_os("ZKMW_TEST_RUN_DIR") {
        Some(run) => PathBuf::from(run).join("tmp"),
        None => std::env::temp_dir(),
    };
    let dir = base.join(leaf);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A name no other test (nor another run of this one) uses.
pub fn unique(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{name}-{}-{nanos}-{n}", std::process::id())
}
