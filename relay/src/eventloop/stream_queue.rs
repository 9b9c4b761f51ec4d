//! What waits to be written to one stream client (TCP or TLS): answers and relayed data, in
//! order, counted in bytes, with backpressure.
//!
//! An answer is never dropped: the connection's reader stops reading (and so stops making
//! answers) while more than [`HIGH_WATER`] bytes wait, and goes on once the writer has brought
//! it under [`LOW_WATER`]; a client that pipelines thousands of requests is slowed down by its
//! own unread answers, like any TCP sender. Relayed data, which comes from peers that this
//! client does not pace, is dropped (and counted as a send error) above [`DATA_LIMIT`], as a
//! datagram would be: it is datagrams carried over a stream. The queue starts empty and
//! allocates only what waits, so an idle connection costs nothing here.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use tokio::sync::Notify;

/// Above this many bytes waiting, the reader pauses.
pub(super) const HIGH_WATER: usize = 64 * 1024;
/// The reader goes on once the bytes waiting are below this.
pub(super) const LOW_WATER: usize = 16 * 1024;
/// Relayed data is dropped while this many bytes wait.
pub(super) const DATA_LIMIT: usize = 256 * 1024;

/// The frames waiting for one stream client's writer task.
#[derive(Debug, Default)]
pub(super) struct StreamQueue {
    frames: RefCell<VecDeque<Vec<u8>>>,
    /// Bytes queued or being written.
    bytes: Cell<usize>,
    /// No more frames will come: the writer finishes what waits and shuts the stream down.
    closed: Cell<bool>,
    /// The writer failed or gave up: nothing more gets written.
    broken: Cell<bool>,
    /// Wakes the writer (a frame, or the end).
    to_writer: Notify,
    /// Wakes the reader (room again, or the writer broke).
    to_reader: Notify,
}

impl StreamQueue {
    /// Queues an answer: always taken, unless the writer is gone.
    pub(super) fn push_reply(&self, frame: Vec<u8>) -> bool {
        if self.broken.get() || self.closed.get() {
            return false;
        }
        self.bytes.set(self.bytes.get() + frame.len());
        let mut frames = self.frames.borrow_mut();
        frames.push_back(frame);
        drop(frames);
        self.to_writer.notify_one();
        true
    }

    /// Queues relayed data unless [`DATA_LIMIT`] bytes already wait.
    pub(super) fn push_data(&self, frame: &[u8]) -> bool {
        if self.bytes.get() >= DATA_LIMIT {
            return false;
        }
        self.push_reply(frame.to_vec())
    }

    /// Whether the reader should pause.
    pub(super) fn is_full(&self) -> bool {
        self.bytes.get() > HIGH_WATER
    }

    pub(super) fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Waits until the reader may go on: the bytes waiting are under [`LOW_WATER`], or the
    /// writer broke (the caller checks [`StreamQueue::is_broken`]).
    pub(super) async fn room(&self) {
        while self.bytes.get() >= LOW_WATER && !self.broken.get() {
            self.to_reader.notified().await;
        }
    }

    /// Waits until the writer breaks off.
    pub(super) async fn broken(&self) {
        while !self.broken.get() {
            self.to_reader.notified().await;
        }
    }

    /// No more frames: the writer ends once what waits is written.
    pub(super) fn close(&self) {
        self.closed.set(true);
        self.to_writer.notify_one();
    }

    /// The writer's side: the next frame, if one waits and the writer has not broken off.
    pub(super) fn pop(&self) -> Option<Vec<u8>> {
        if self.broken.get() {
            return None;
        }
        let mut frames = self.frames.borrow_mut();
        let frame = frames.pop_front();
        if frames.is_empty() && frames.capacity() > 16 {
            // A burst is over: give its slots back.
            *frames = VecDeque::new();
        }
        frame
    }

    /// Whether nothing waits (the writer flushes then).
    pub(super) fn is_empty(&self) -> bool {
        self.frames.borrow().is_empty()
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Waits for a frame or the end.
    pub(super) async fn wait(&self) {
        if self.is_empty() && !self.closed.get() {
            self.to_writer.notified().await;
        }
    }

    /// `len` bytes were written: wakes the reader when there is room again.
    pub(super) fn written(&self, len: usize) {
        let bytes = self.bytes.get().saturating_sub(len);
        self.bytes.set(bytes);
        if bytes < LOW_WATER {
            self.to_reader.notify_one();
        }
    }

    /// The writer failed: what waits is dropped and the reader woken.
    pub(super) fn break_off(&self) {
        self.broken.set(true);
        self.frames.borrow_mut().clear();
        self.bytes.set(0);
        self.to_reader.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_always_taken_data_only_under_the_limit() {
        let q = StreamQueue::default();
        for _ in 0..(DATA_LIMIT / 1000 + 10) {
            assert!(q.push_reply(vec![0; 1000]));
        }
        assert!(q.is_full());
        assert!(!q.push_data(&[0; 10]));
        assert!(q.push_reply(vec![0; 10]), "an answer is never dropped");
        while let Some(f) = q.pop() {
            q.written(f.len());
        }
        assert!(!q.is_full());
        assert!(q.push_data(&[0; 10]));
    }

    #[test]
    fn nothing_is_taken_once_broken_or_closed() {
        let q = StreamQueue::default();
        q.push_reply(vec![1]);
        q.break_off();
        assert!(q.is_broken());
        assert!(q.pop().is_none());
        assert!(!q.push_reply(vec![2]));
        let q = StreamQueue::default();
        q.close();
        assert!(!q.push_reply(vec![2]));
    }
}
