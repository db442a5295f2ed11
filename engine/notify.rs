//! The thread that hands large batches' answers to their appenders.
//!
//! Why: each answer wakes a sleeping appender, one `futex` call and a task switch, and the
//! writer paid them all before it could start the next batch: with 64 appenders on 2 cores,
//! waking was the largest part of `perf`'s samples (`examples/w2.rs`). Answers of a batch that
//! is durable and published can be given by any thread; handing them over costs the writer one
//! channel send. A batch of a few appends is answered by the writer itself: an extra hop would
//! only add a wake-up to the latency of a lone appender (W1).

use crossbeam_channel::Sender;
use std::thread::JoinHandle;

/// Answers one batch's appenders: everything they need was set before it is called.
pub type Answers = Box<dyn FnOnce() + Send>;

pub struct Notifier {
    tx: Option<Sender<Answers>>,
    thread: Option<JoinHandle<()>>,
}

impl Notifier {
    /// `None` when the thread cannot be started: the writer then answers every batch itself.
    pub fn start() -> Option<Notifier> {
        let (tx, rx) = crossbeam_channel::unbounded::<Answers>();
        let thread = std::thread::Builder::new()
            .name("streamlog-notify".into())
            .spawn(move || {
                for answers in rx {
                    answers();
                }
            })
            .ok()?;
        Some(Notifier {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hand `answers` over; given back when the thread is gone (the caller runs them).
    pub fn send(&self, answers: Answers) -> Result<(), Answers> {
        match &self.tx {
            Some(tx) => tx.send(answers).map_err(|e| e.0),
            None => Err(answers),
        }
    }
}

impl Drop for Notifier {
    /// Every answer handed over is given before the writer's thread ends (and so before
    /// `Store::close` returns).
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Notifier;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn every_answer_handed_over_is_given_by_the_time_it_is_dropped() {
        let given = Arc::new(AtomicUsize::new(0));
        let notifier = Notifier::start().unwrap();
        for _ in 0..100 {
            let given = Arc::clone(&given);
            assert!(notifier
                .send(Box::new(move || {
                    given.fetch_add(1, Ordering::SeqCst);
                }))
                .is_ok());
        }
        drop(notifier);
        assert_eq!(given.load(Ordering::SeqCst), 100);
    }
}
