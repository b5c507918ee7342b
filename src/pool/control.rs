//! Pause, disable and reconnect — per database and for the whole process — as the admin
//! console (`PAUSE`, `RESUME`, `DISABLE`, `ENABLE`, `RECONNECT`, `KILL`) and the signals
//! (`SIGUSR1`, `SIGUSR2`) set them, and as checkouts, check-ins and logins obey them.
//!
//! PgBouncer's semantics:
//! - a paused database hands out no server connection (clients wait, as for a full pool) and
//!   closes each of its server connections when it is given back, so `PAUSE` completes when
//!   the database has no server connection left: the moment to restart or fail over the
//!   server. `PAUSE` of the whole process and `PAUSE db` are separate flags, each cleared by
//!   its own `RESUME`.
//! - a disabled database refuses new clients; its current clients go on.
//! - `RECONNECT` advances the database's generation: a server connection opened before is
//!   closed when it is next given back (idle ones at once), so every query after the
//!   reconnect runs on a connection opened after it, with nobody waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::watch;

/// The state of one database (or of the whole process).
#[derive(Debug)]
pub struct Control {
    /// Mirrors `paused_tx` for the fast path (a checkout reads it every transaction).
    paused: AtomicBool,
    paused_tx: watch::Sender<bool>,
    disabled: AtomicBool,
    generation: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            paused: AtomicBool::new(false),
            paused_tx: watch::channel(false).0,
            disabled: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }
}

impl Control {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Relaxed)
    }

    /// Pause or resume; whether the state changed.
    pub fn set_paused(&self, paused: bool) -> bool {
        let changed = self.paused.swap(paused, Relaxed) != paused;
        self.paused_tx.send_replace(paused);
        changed
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Relaxed);
    }

    /// The current `RECONNECT` generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// `RECONNECT`: connections opened before now are closed when given back.
    pub fn reconnect(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    /// Wait until not paused. Cancel-safe.
    async fn until_resumed(&self) {
        let mut rx = self.paused_tx.subscribe();
        // `wait_for` checks the current value first, so a resume between the fast-path check
        // and the subscription is not missed.
        let _ = rx.wait_for(|p| !*p).await;
    }
}

/// The process-wide control and one per database name, created on first use.
#[derive(Debug, Default)]
pub struct Controls {
    global: Arc<Control>,
    databases: DashMap<String, Arc<Control>>,
}

impl Controls {
    pub fn global(&self) -> &Arc<Control> {
        &self.global
    }

    pub fn database(&self, name: &str) -> Arc<Control> {
        if let Some(c) = self.databases.get(name) {
            return c.clone();
        }
        self.databases
            .entry(name.to_owned())
            .or_default()
            .value()
            .clone()
    }

    /// Databases with a control, for `SHOW DATABASES` (paused, disabled).
    pub fn database_if_known(&self, name: &str) -> Option<Arc<Control>> {
        self.databases.get(name).map(|c| c.value().clone())
    }
}

/// What a pool consults: its database's control and the process-wide one.
#[derive(Debug, Clone)]
pub struct PoolControl {
    pub database: Arc<Control>,
    pub global: Arc<Control>,
    /// The pool's own reconnects (a reload that changed how it logs in); its pause and
    /// disable flags are not used.
    pub own: Arc<Control>,
}

impl PoolControl {
    /// Whether connections must not be handed out (or kept) now.
    pub fn is_paused(&self) -> bool {
        self.database.is_paused() || self.global.is_paused()
    }

    /// Wait until neither the database nor the process is paused. Cancel-safe.
    pub async fn until_running(&self) {
        while self.is_paused() {
            tokio::select! {
                _ = self.database.until_resumed() => {}
                _ = self.global.until_resumed() => {}
            }
        }
    }

    /// Whether a connection of `generation` must be closed rather than reused.
    pub fn is_stale(&self, generation: u64) -> bool {
        generation < self.generation()
    }

    /// The generation a new connection belongs to: the sum of the counters, which grows
    /// with a `RECONNECT` of the database or of the process, or a reconnect of the pool.
    pub fn generation(&self) -> u64 {
        self.database.generation() + self.global.generation() + self.own.generation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_paused_database_waits_until_both_flags_clear() {
        let controls = Controls::default();
        let pc = PoolControl {
            database: controls.database("db"),
            global: controls.global().clone(),
            own: Default::default(),
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(50), pc.until_running())
                .await
                .is_ok()
        );
        pc.database.set_paused(true);
        controls.global().set_paused(true);
        let waiting = tokio::spawn({
            let pc = pc.clone();
            async move { pc.until_running().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        pc.database.set_paused(false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the global pause still holds");
        controls.global().set_paused(false);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("resumed within 5 s")
            .unwrap();
    }

    #[test]
    fn reconnect_makes_older_connections_stale() {
        let controls = Controls::default();
        let pc = PoolControl {
            database: controls.database("db"),
            global: controls.global().clone(),
            own: Default::default(),
        };
        let g = pc.generation();
        assert!(!pc.is_stale(g));
        pc.database.reconnect();
        assert!(pc.is_stale(g));
        assert!(!pc.is_stale(pc.generation()));
        controls.global().reconnect();
        controls.global().reconnect();
        assert!(pc.is_stale(1), "the global reconnect counts too");
    }
}
