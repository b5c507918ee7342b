//! Event loops: one single-threaded tokio runtime per thread, with client sessions spread
//! across them.
//!
//! Why not one multi-threaded runtime: a session is one task that wakes twice per transaction,
//! and work stealing makes each wake-up cost more (atomics, cross-thread queues, a thread
//! woken to steal) than the relay's own work. Why not one loop, as PgBouncer has: the loop is
//! the one path every transaction of every client goes through, so on a machine it shares with
//! PostgreSQL and the application, a preempted loop stalls all sessions while a core sits idle.
//! With a loop per core, each session stays on its loop for life (no locks or cross-thread
//! wake-ups on the hot path), and the loops run in parallel.
//!
//! Loop 0 is the runtime that calls [`EventLoops::start`] (it also accepts clients and runs
//! the pools' maintenance); the others run on threads of their own. A session goes to the loop
//! with the fewest live sessions. Sockets are registered with the runtime that polls them: a
//! client socket moves to its session's loop before the session starts, and a pooled server
//! connection moves to the loop of the session that checks it out (see
//! [`crate::pool::ServerConn::at_home`]).

use std::future::Future;

use crate::net::accept::MoveToLoop;
use prometheus::IntGauge;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::metrics::Metrics;

/// The event loops of one running pgheal.
pub struct EventLoops {
    loops: Vec<Loop>,
}

struct Loop {
    /// `None` for loop 0, the runtime that started the loops.
    handle: Option<Handle>,
    /// Live sessions on this loop (`pgheal_event_loop_sessions`).
    sessions: IntGauge,
    stop: Option<oneshot::Sender<()>>,
}

impl EventLoops {
    /// Loop 0 is the current runtime; start `count - 1` more, each on a thread of its own.
    pub fn start(count: usize, metrics: &Metrics) -> std::io::Result<EventLoops> {
        let sessions = |n: usize| {
            metrics
                .event_loop_sessions
                .with_label_values(&[&n.to_string()])
        };
        let mut loops = vec![Loop {
            handle: None,
            sessions: sessions(0),
            stop: None,
        }];
        for n in 1..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("pgheal-loop-{n}"))
                .spawn(move || {
                    // Runs the loop's tasks until told to stop; then the runtime is dropped,
                    // which drops whatever tasks are left.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            loops.push(Loop {
                handle: Some(handle),
                sessions: sessions(n),
                stop: Some(stop),
            });
        }
        Ok(EventLoops { loops })
    }

    pub fn len(&self) -> usize {
        self.loops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loops.is_empty()
    }

    /// Run a client session on the loop with the fewest live sessions, in `set`.
    pub fn spawn_session<S, F, Fut>(&self, set: &mut JoinSet<()>, stream: S, session: F)
    where
        S: MoveToLoop,
        F: FnOnce(S) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(target) = self.loops.iter().min_by_key(|l| l.sessions.get()) else {
            return;
        };
        let live = LiveSession::new(&target.sessions);
        match &target.handle {
            None => {
                set.spawn(async move {
                    let _live = live;
                    session(stream).await
                });
            }
            Some(handle) => {
                // Deregistered here, registered with the target loop's runtime there.
                let std = match stream.into_std() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand a client connection to its event loop");
                        return;
                    }
                };
                set.spawn_on(
                    async move {
                        let _live = live;
                        match S::from_std(std) {
                            Ok(stream) => session(stream).await,
                            Err(e) => tracing::warn!(error = %e, "cannot register a client connection with its event loop"),
                        }
                    },
                    handle,
                );
            }
        }
    }

    /// Stop the loops' threads (once every session has ended). They end on their own: joining
    /// them here would block the runtime that calls this.
    pub fn stop(self) {}
}

impl Drop for EventLoops {
    fn drop(&mut self) {
        for l in &mut self.loops {
            if let Some(stop) = l.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// Counts a session on its loop while it lives.
struct LiveSession(IntGauge);

impl LiveSession {
    fn new(count: &IntGauge) -> LiveSession {
        count.inc();
        LiveSession(count.clone())
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    /// Sessions go to the least busy loop, run on that loop's thread, and the count drops when
    /// they end.
    #[tokio::test(flavor = "current_thread")]
    async fn sessions_spread_over_loops_and_run_on_their_threads() {
        let metrics = Metrics::new();
        let loops = EventLoops::start(3, &metrics).unwrap();
        assert_eq!(loops.len(), 3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut set = JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let mut clients = Vec::new();
        for _ in 0..6 {
            clients.push(TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let mut release = release_rx.clone();
            loops.spawn_session(&mut set, stream, move |s| async move {
                // The socket works on the loop it was moved to.
                s.writable().await.unwrap();
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
                let _ = release.wait_for(|r| *r).await;
            });
        }
        let mut threads = Vec::new();
        for _ in 0..6 {
            threads.push(rx.recv().await.unwrap());
        }
        threads.sort();
        let loop1 = Some("pgheal-loop-1".to_owned());
        let loop2 = Some("pgheal-loop-2".to_owned());
        assert_eq!(threads.iter().filter(|t| **t == loop1).count(), 2);
        assert_eq!(threads.iter().filter(|t| **t == loop2).count(), 2);
        let counts: Vec<i64> = loops.loops.iter().map(|l| l.sessions.get()).collect();
        assert_eq!(counts, vec![2, 2, 2]);
        release_tx.send(true).unwrap();
        while set.join_next().await.is_some() {}
        assert!(loops.loops.iter().all(|l| l.sessions.get() == 0));
        assert!(metrics
            .render()
            .contains("pgheal_event_loop_sessions{event_loop=\"2\"} 0"));
        loops.stop();
    }
}
