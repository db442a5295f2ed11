//! Pipelined appends: a producer submits without waiting, its appends commit in submission
//! order, and once one fails every later one fails too (segment-format.md §14).

use crate::error::{Error, Result};
use crate::reply::{Answer, Watch};
use crate::store::Store;
use crate::types::{Append, AppendResult};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// What the writer and a producer share: the producer's first failure.
#[derive(Default)]
pub struct Link {
    failure: Mutex<Option<String>>,
}

impl Link {
    /// The first failure, once there was one.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Record a failure; the first one stays.
    pub fn fail(&self, e: &Error) {
        let mut f = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if f.is_none() {
            *f = Some(e.to_string());
        }
    }
}

/// A producer of pipelined appends (`Store::producer`). Its appends are submitted without
/// waiting for the previous ones and are committed in submission order, fail-stop: once one of
/// them fails, every later one fails with `Error::ProducerFailed`, so what is committed is
/// always a prefix of what was submitted. At most `in_flight_max` appends are unanswered at a
/// time; `submit` waits for the oldest beyond that.
pub struct Producer {
    store: Store,
    link: Arc<Link>,
    in_flight: VecDeque<Watch<Result<Vec<AppendResult>>>>,
    in_flight_max: usize,
}

/// An append submitted by a producer; `wait` for its result.
#[must_use = "an append's outcome is only known by waiting for it"]
pub struct Pending {
    answer: Answer<Result<Vec<AppendResult>>>,
    store: Store,
}

impl Pending {
    /// Block until the append is durable, or failed.
    ///
    /// # Errors
    /// As `Store::append`, and `ProducerFailed` when an earlier append of the producer failed.
    pub fn wait(self) -> Result<AppendResult> {
        self.store.wait_one(self.answer)
    }
}

impl Producer {
    pub(crate) fn new(store: Store, in_flight_max: usize) -> Producer {
        Producer {
            store,
            link: Arc::new(Link::default()),
            in_flight: VecDeque::new(),
            in_flight_max: in_flight_max.max(1),
        }
    }

    /// Submit an append without waiting for it to commit.
    ///
    /// # Errors
    /// `ProducerFailed` once an earlier append of this producer is known to have failed; any
    /// error of `Store::append` that can be seen before queueing (an invalid append), which
    /// also stops the producer.
    pub fn submit(&mut self, append: Append) -> Result<Pending> {
        if let Some(cause) = self.link.failure() {
            return Err(Error::ProducerFailed { cause });
        }
        while self.in_flight.len() >= self.in_flight_max {
            if let Some(oldest) = self.in_flight.pop_front() {
                oldest.wait_ready();
            }
        }
        // Answers come batch by batch, in submission order within what commits: drop the
        // answered ones from the front (one answered early behind an open one waits its turn).
        while self.in_flight.front().is_some_and(Watch::is_ready) {
            self.in_flight.pop_front();
        }
        let answer = match self
            .store
            .send_append(vec![append], false, Some(Arc::clone(&self.link)))
        {
            Ok(answer) => answer,
            Err(e) => {
                self.link.fail(&e);
                return Err(e);
            }
        };
        self.in_flight.push_back(answer.watch());
        Ok(Pending {
            answer,
            store: self.store.clone(),
        })
    }

    /// Wait until every append submitted so far is answered.
    ///
    /// # Errors
    /// `ProducerFailed` when one of them failed (the cause names the first failure).
    pub fn flush(&mut self) -> Result<()> {
        while let Some(w) = self.in_flight.pop_front() {
            w.wait_ready();
        }
        match self.link.failure() {
            Some(cause) => Err(Error::ProducerFailed { cause }),
            None => Ok(()),
        }
    }

    /// The first failure of this producer, if any.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.link.failure()
    }
}
