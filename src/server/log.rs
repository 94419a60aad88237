//! The server's log: one line per event to stderr, filtered by `--log-level`.

use anyhow::{bail, Result};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static LOG_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Apply `--log-level` (SGLang's names, plus a few aliases).
pub fn set_log_level(s: &str) -> Result<()> {
    let l = match s.to_ascii_lowercase().as_str() {
        "error" | "critical" => Level::Error,
        "warning" | "warn" => Level::Warn,
        "info" => Level::Info,
        "debug" | "trace" => Level::Debug,
        other => bail!("--log-level {other:?}: use error, warning, info or debug"),
    };
    LOG_LEVEL.store(l as u8, Relaxed);
    Ok(())
}

/// One line to stderr: `[HH:MM:SS] LEVEL message` (UTC).
pub fn log(level: Level, msg: &str) {
    if level as u8 > LOG_LEVEL.load(Relaxed) {
        return;
    }
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let name = match level {
        Level::Error => "ERROR",
        Level::Warn => "WARNING",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
    };
    eprintln!("[{h:02}:{m:02}:{s:02}] {name} {msg}");
}

/// A request field dllm accepts but ignores: a warning the first time each field is seen, debug
/// after that (SGLang's frontend sends `spaces_between_special_tokens` with every request, which
/// filled the log with one warning per request).
pub fn ignored_field(field: &str) {
    let first = first_time(field);
    let level = if first { Level::Warn } else { Level::Debug };
    let once = if first { " (said once per field)" } else { "" };
    log(level, &format!("{field} is accepted but ignored by dllm{once}"));
}

static SEEN_IGNORED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn first_time(field: &str) -> bool {
    let mut seen = SEEN_IGNORED.lock().unwrap_or_else(|e| e.into_inner());
    seen.get_or_insert_with(HashSet::new).insert(field.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ignored_field_is_reported_once() {
        assert!(super::first_time("test_field_a"));
        assert!(!super::first_time("test_field_a"));
        assert!(super::first_time("test_field_b"));
    }
}
