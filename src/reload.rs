//! `RELOAD`, SIGHUP and `SET`: a new configuration applied to the running pgheal without
//! dropping a session.
//!
//! [`crate::config::live::LiveConfig`] builds and checks the new configuration (an invalid
//! one changes nothing); this module applies what changed to what is running:
//! - new logins read the new configuration: databases added or removed, users and their
//!   secrets, authentication, TLS towards clients, the heal settings;
//! - pools take new sizes and timeouts in place, and replace their connections when the way
//!   they log in changed ([`crate::pool::Pools::reconfigure`]);
//! - `max_client_conn` changes at once (clients over a smaller limit stay connected);
//! - the server TLS files are read again; the log level follows `verbose`;
//! - settings that only a restart changes keep their value, and the log says so.

use crate::config::live::Reloaded;
use crate::config::ConfigError;
use crate::session::Shared;

/// Why a reload or `SET` changed nothing.
pub type ReloadError = ConfigError;

/// Read the configuration file again and apply it.
pub fn reload(shared: &Shared) -> Result<(), ReloadError> {
    let r = shared.config.reload().inspect_err(|e| {
        tracing::warn!(error = %e, "RELOAD failed: keeping the configuration in force");
    })?;
    apply(shared, &r);
    tracing::info!(file = ?r.new.source, "configuration reloaded");
    Ok(())
}

/// `SET key = value` from the admin console.
pub fn set(shared: &Shared, key: &str, value: &str) -> Result<(), ReloadError> {
    let r = shared.config.set(key, value)?;
    apply(shared, &r);
    tracing::info!(key, "SET: configuration changed");
    Ok(())
}

fn apply(shared: &Shared, r: &Reloaded) {
    for w in &r.new.warnings {
        if !r.old.warnings.contains(w) {
            tracing::warn!("{w}");
        }
    }
    for key in &r.restart_only {
        tracing::warn!(
            key,
            "changed in the configuration file; takes effect when pgheal is restarted"
        );
    }
    shared.client_slots.resize(r.new.max_client_conn);
    shared.metrics.set_databases(r.new.databases.keys());
    shared.pools.reconfigure(&r.old, &r.new);
    crate::net::tls::reload_server_files(true);
    if r.new.process.verbose != r.old.process.verbose {
        shared.config.notify_verbose(r.new.process.verbose);
    }
}
