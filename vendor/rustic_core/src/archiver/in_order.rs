//! [backplan patch] A map that hands only the items that need work to a pool of threads and
//! yields every result in the order of its input (a new file, not in rustic_core 0.13.0; see
//! `BACKPLAN.md`).
//!
//! rustic_core's archiver mapped every entry on a `pariter` pool (`parallel_map_scoped` +
//! `readahead_scoped`): each entry, even an unchanged file that needs no read, made two trips
//! between threads. Here the calling thread pulls items from the source; an item for which
//! `needs_pool` says yes (a file to read) goes to a worker and leaves a `Pending` slot, any
//! other item is mapped at once on the calling thread and leaves a `Ready` slot. Slots are
//! yielded strictly in the order they were made, so the output is the same as a one-thread
//! `map`. At most `capacity` slots exist at a time (memory stays bounded); a panic in a worker
//! is re-raised on the calling thread when its slot is reached.

use std::{
    collections::VecDeque,
    panic::{self, AssertUnwindSafe},
    thread::{self, Scope},
};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

/// What a worker sends back: the mapped item, or the payload of its panic.
type Outcome<O> = thread::Result<O>;

/// A job for a worker: the item and where to send its outcome.
type Job<T, O> = (T, Sender<Outcome<O>>);

/// One place in the output order.
enum Slot<O> {
    /// Mapped on the calling thread.
    Ready(O),
    /// Handed to a worker; its outcome arrives on this receiver.
    Pending(Receiver<Outcome<O>>),
}

/// The iterator returned by [`map_in_order`].
pub(crate) struct InOrder<I: Iterator, O, F, Q> {
    iter: I,
    done: bool,
    slots: VecDeque<Slot<O>>,
    capacity: usize,
    jobs: Option<Sender<Job<I::Item, O>>>,
    f: F,
    needs_pool: Q,
}

/// Maps `iter` with `f`, in order: items for which `needs_pool` is true on `threads` worker
/// threads spawned in `scope`, the others on the calling thread; at most `capacity` items
/// between the source and the output.
pub(crate) fn map_in_order<'scope, 'env, I, O, F, Q>(
    scope: &'scope Scope<'scope, 'env>,
    iter: I,
    threads: usize,
    capacity: usize,
    needs_pool: Q,
    f: F,
) -> InOrder<I, O, F, Q>
where
    I: Iterator,
    I::Item: Send + 'env,
    O: Send + 'env,
    F: Fn(I::Item) -> O + Clone + Send + 'env,
    Q: FnMut(&I::Item) -> bool,
{
    let (jobs, queue) = unbounded::<Job<I::Item, O>>(); // bounded by `capacity` slots
    for _ in 0..threads.max(1) {
        let queue = queue.clone();
        let f = f.clone();
        let _ = scope.spawn(move || {
            for (item, reply) in queue {
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| f(item)));
                // the receiver is gone only when the consumer stopped early: drop the result
                let _ = reply.send(outcome);
            }
        });
    }
    InOrder {
        iter,
        done: false,
        slots: VecDeque::with_capacity(capacity.max(1)),
        capacity: capacity.max(1),
        jobs: Some(jobs),
        f,
        needs_pool,
    }
}

impl<I, O, F, Q> Iterator for InOrder<I, O, F, Q>
where
    I: Iterator,
    F: Fn(I::Item) -> O,
    Q: FnMut(&I::Item) -> bool,
{
    type Item = O;

    fn next(&mut self) -> Option<O> {
        while !self.done && self.slots.len() < self.capacity {
            let Some(item) = self.iter.next() else {
                self.done = true;
                self.jobs = None; // the workers finish their queue and stop
                break;
            };
            if (self.needs_pool)(&item) {
                let (reply, outcome) = bounded(1);
                self.jobs
                    .as_ref()
                    .expect("jobs are open until the source ends")
                    .send((item, reply))
                    .expect("workers stay alive while jobs are open");
                self.slots.push_back(Slot::Pending(outcome));
            } else {
                self.slots.push_back(Slot::Ready((self.f)(item)));
            }
        }
        match self.slots.pop_front()? {
            Slot::Ready(out) => Some(out),
            Slot::Pending(outcome) => match outcome.recv() {
                Ok(Ok(out)) => Some(out),
                Ok(Err(payload)) => panic::resume_unwind(payload),
                Err(_) => panic!("an archiver worker thread ended without an answer"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::map_in_order;
    use std::{thread, time::Duration};

    #[test]
    fn keeps_the_input_order_and_sends_only_chosen_items_to_the_pool() {
        let main = thread::current().id();
        let out: Vec<_> = thread::scope(|s| {
            map_in_order(
                s,
                0..1000_u64,
                3,
                16,
                |i| i % 3 == 0,
                move |i| {
                    if i % 3 == 0 {
                        assert_ne!(thread::current().id(), main);
                        // later items finish first
                        thread::sleep(Duration::from_micros(1000 - i));
                    } else {
                        assert_eq!(thread::current().id(), main);
                    }
                    i * 2
                },
            )
            .collect()
        });
        assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn a_panic_in_a_worker_reaches_the_consumer() {
        let res = panic::catch_unwind(|| {
            thread::scope(|s| {
                map_in_order(s, 0..100, 2, 8, |_| true, |i: i32| {
                    assert!(i != 42, "item 42");
                    i
                })
                .count()
            })
        });
        let payload = res.expect_err("the worker's panic is re-raised");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_default();
        assert!(msg.contains("item 42"), "{msg}");
    }

    #[test]
    fn stopping_early_ends_the_workers() {
        let first: Vec<_> = thread::scope(|s| {
            map_in_order(s, 0..10_000, 2, 4, |_| true, |i: i32| i)
                .take(3)
                .collect()
        });
        assert_eq!(first, [0, 1, 2]);
    }

    use std::panic;
}
