//! The server's log: one line per event to stderr, filtered by `--log-level`.

use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

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
