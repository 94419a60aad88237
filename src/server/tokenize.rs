//! Tokenization off the HTTP threads: a fixed pool of threads, one fewer than the cores, that
//! the handlers hand their texts to.
//!
//! Tokenizing takes about a microsecond and a few hundred bytes of memory per input byte. On the
//! async workers it would stall every connection they serve (`/health` included) for as long as
//! a big prompt takes; on tokio's blocking pool it would spread over up to 512 threads, and with
//! them over as many malloc arenas that keep what they once held. A small fixed pool bounds the
//! memory that stays allocated after it (each thread's arena keeps about one prompt's worth),
//! and leaving one core out keeps a flood of long prompts from taking every core from the async
//! workers and the engine thread (tools/load_test.py on 2 busy cores: /health took up to 280 ms
//! with two tokenizer threads at work, 8 to 99 ms with one).

use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, Result};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

struct Job {
    text: String,
    reply: SyncSender<Result<Vec<u32>>>,
}

pub struct TokenizePool {
    jobs: Mutex<Sender<Job>>,
    pub threads: usize,
}

impl TokenizePool {
    /// `threads` workers (at least one), each sharing `tokenizer`.
    pub fn new(tokenizer: Arc<Tokenizer>, threads: usize) -> Result<Self> {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let (rx, tok) = (rx.clone(), tokenizer.clone());
            std::thread::Builder::new()
                .name(format!("dllm-tokenize-{i}"))
                .spawn(move || work(&rx, &tok))
                .map_err(|e| anyhow!("starting tokenizer thread {i}: {e}"))?;
        }
        Ok(TokenizePool { jobs: Mutex::new(tx), threads })
    }

    /// One thread fewer than the cores `std::thread::available_parallelism` reports (at least one).
    pub fn for_cores(tokenizer: Arc<Tokenizer>) -> Result<Self> {
        Self::new(tokenizer, std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1)))
    }

    /// Tokenize `text` on the pool. Called from an async handler, the wait happens with the
    /// worker thread handed back to the runtime (`block_in_place`), so the worker's other
    /// connections go on being served; the text waits its turn behind at most `threads`
    /// others being tokenized.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job { text: text.to_string(), reply };
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).send(job).map_err(|_| anyhow!("the tokenizer threads have stopped"))?;
        let wait = move || answer.recv().unwrap_or_else(|_| Err(anyhow!("a tokenizer thread stopped")));
        // `block_in_place` exists on the multi-threaded runtime only (the server's); elsewhere
        // (a caller's current-thread runtime, or no runtime) the caller's thread waits.
        let multi_thread =
            tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        }
    }
}

/// A pool thread: take the next text, tokenize it, answer; stop when the pool is dropped.
fn work(jobs: &Mutex<Receiver<Job>>, tokenizer: &Tokenizer) {
    loop {
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        // A tokenizer bug on some odd input must not shrink the pool: it is that request's error.
        let ids = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tokenizer.encode(&job.text)))
            .unwrap_or_else(|_| Err(anyhow!("the tokenizer failed on this text")));
        drop(job.text);
        let _ = job.reply.send(ids);
    }
}
