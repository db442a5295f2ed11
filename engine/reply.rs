//! The one-shot slot through which the writer answers an append.
//!
//! Why not a channel: a waiting appender must cost no CPU. Channel receivers spin and yield
//! before they sleep, and with 64 appenders on 2 cores that spinning took a third of the CPU the
//! writer needed (measured with `perf` on `examples/w2.rs`). A mutex and a condition variable
//! sleep at once.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

enum State<T> {
    Waiting,
    Ready(T),
    /// The sender was dropped without an answer (the writer stopped).
    Dropped,
    Taken,
}

struct Slot<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
}

/// The writer's half: answers once, or, dropped unanswered, tells the waiter so.
pub struct Reply<T> {
    slot: Option<Arc<Slot<T>>>,
}

/// The appender's half.
pub struct Answer<T> {
    slot: Arc<Slot<T>>,
}

pub fn slot<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Waiting),
        ready: Condvar::new(),
    });
    (
        Reply {
            slot: Some(Arc::clone(&slot)),
        },
        Answer { slot },
    )
}

impl<T> Reply<T> {
    pub fn send(mut self, value: T) {
        if let Some(slot) = self.slot.take() {
            slot.set(State::Ready(value));
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.set(State::Dropped);
        }
    }
}

impl<T> Slot<T> {
    /// The state, once it is no longer `Waiting`. No spinning: the waiter sleeps.
    fn ready(&self) -> std::sync::MutexGuard<'_, State<T>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while matches!(*state, State::Waiting) {
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state
    }

    fn set(&self, value: State<T>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = value;
        drop(state);
        // The appender and a producer watching the same slot may both wait.
        self.ready.notify_all();
    }
}

/// A look at an answer without taking it: whether it has come.
pub struct Watch<T> {
    slot: Arc<Slot<T>>,
}

impl<T> Watch<T> {
    pub fn is_ready(&self) -> bool {
        !matches!(
            *self
                .slot
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            State::Waiting
        )
    }

    /// Block until the answer has come (or the writer dropped the request).
    pub fn wait_ready(&self) {
        drop(self.slot.ready());
    }
}

impl<T> Answer<T> {
    pub fn watch(&self) -> Watch<T> {
        Watch {
            slot: Arc::clone(&self.slot),
        }
    }

    /// Block until the answer comes; `None` if the writer dropped the request unanswered.
    pub fn wait(self) -> Option<T> {
        let mut state = self.slot.ready();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Ready(value) => Some(value),
            State::Dropped | State::Taken | State::Waiting => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::slot;

    #[test]
    fn answer_crosses_threads() {
        let (reply, answer) = slot::<u32>();
        let t = std::thread::spawn(move || reply.send(7));
        assert_eq!(answer.wait(), Some(7));
        t.join().unwrap();
    }

    #[test]
    fn dropped_reply_wakes_the_waiter() {
        let (reply, answer) = slot::<u32>();
        let t = std::thread::spawn(move || drop(reply));
        assert_eq!(answer.wait(), None);
        t.join().unwrap();
    }
}
