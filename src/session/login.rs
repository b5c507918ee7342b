//! The login of a client: what a connection's opening leads to, from the StartupMessage to
//! the first ReadyForQuery. It is kept apart from [`super::run`], which holds the whole life
//! of a connection, because the login is the longest single step of that life and reads on
//! its own: the cancel request, the protocol negotiation, authentication (with the admin
//! console's own rules), the limits, the startup settings, and the pool assignment.

use std::sync::Arc;

use crate::auth::AuthMethod;
use crate::config::{Config, PoolMode};
use crate::heal::relay::Naming;
use crate::metrics::Metrics;
use crate::net::{ClientReader, ClientWriter, PeerAddr};
use crate::pool::capacity::Slot;
use crate::protocol::backend::TxStatus;
use crate::protocol::encode;

use super::cancel::CancelTarget;
use super::client_auth::{authenticate, TlsBinding};
use super::clients::{ClientInfo, Registered};
use super::hba_check::{method_for, Transport};
use super::params;
use super::settings::{ClientSettings, Reported};
use super::settings_watch::SettingsWatch;
use super::startup::Opening;
use super::{SessionError, Shared};

/// Authentication messages are capped as PostgreSQL caps them (`PG_MAX_AUTH_TOKEN_LENGTH`):
/// before it is known who the client is, it cannot make pgheal buffer `max_packet_size`.
const MAX_AUTH_MESSAGE_LEN: usize = 65_535;

/// What the opening of a connection established.
pub(super) struct Client {
    /// The end of `client_login_timeout`: the opening and authentication must be over by then.
    pub(super) deadline: tokio::time::Instant,
    pub(super) peer: PeerAddr,
    /// The address the client connected to.
    pub(super) local: Option<PeerAddr>,
    /// The uid of the client's OS user, on the Unix socket (SO_PEERCRED).
    pub(super) os_uid: Option<u32>,
    pub(super) opening: Opening,
    /// Channel-binding data of the TLS handshake (see [`super::startup::Opened::end_point`]).
    pub(super) end_point: Option<Vec<u8>>,
    /// The common name of the client's verified certificate.
    pub(super) client_cert_name: Option<String>,
}

/// What a successful login leads to.
pub(super) enum Login {
    /// A client of a pool: the relay.
    Pooled(Box<LoggedIn>),
    /// The admin console.
    Console(ConsoleLogin),
}

/// An admin console login.
pub(super) struct ConsoleLogin {
    pub(super) role: crate::admin::Role,
    pub(super) registered: Registered,
}

/// What a successful login leaves for the relay.
pub(super) struct LoggedIn {
    pub(super) _slot: Option<Slot>,
    /// Counted against `max_db_client_connections` / `max_user_client_connections`.
    pub(super) _admitted: crate::pool::registry::ClientAdmission,
    pub(super) _gauge: ClientGauge,
    pub(super) pool: Arc<crate::pool::Pool>,
    pub(super) mode: PoolMode,
    pub(super) naming: Naming,
    pub(super) attached: Option<Box<crate::pool::Checkout>>,
    pub(super) cancel_key: super::cancel::CancelKey,
    pub(super) settings: ClientSettings,
    pub(super) watch: SettingsWatch,
    pub(super) reported: Reported,
    pub(super) epoch: Arc<crate::heal::SchemaEpoch>,
    /// The client in the admin console's list.
    pub(super) registered: Registered,
    /// The client counted in its pool's figures.
    pub(super) _in_pool: crate::pool::stats::ClientCount,
    /// Named statements a client moved from an old process had prepared.
    pub(super) statements: Vec<crate::takeover::state::Statement>,
}

/// Opening, authentication and server assignment. `Ok(None)`: the client left or sent a
/// cancel request, and there is nothing to relay.
pub(super) async fn login(
    client: Box<Client>,
    reader: &mut ClientReader,
    writer: &mut ClientWriter,
    shared: &Arc<Shared>,
    cfg: &Config,
) -> Result<Option<Login>, SessionError> {
    // Moved out of its box: the opening is consumed below while other fields are still read.
    let client = *client;
    let startup = match client.opening {
        Opening::Gone => return Ok(None),
        Opening::Cancel { pid, key } => {
            let outcome = shared
                .cancels
                .cancel(pid, &key, &cfg.peers, cfg.timeouts.cancel_wait_timeout)
                .await;
            let result = outcome.label();
            shared
                .metrics
                .cancel_requests
                .with_label_values(&[result])
                .inc();
            tracing::info!(result, "cancel request");
            return Ok(None);
        }
        Opening::Startup(p) => p,
    };
    // As PostgreSQL, before authentication: a newer minor version than pgheal's, or `_pq_.`
    // options (pgheal knows none), are answered once, and the session goes on in the version
    // pgheal speaks.
    if startup.needs_negotiation() {
        let v = encode::negotiate_protocol_version(
            startup.negotiated_minor(),
            &startup.protocol_options,
        );
        writer.write_frame(&v).await?;
    }
    let user = startup
        .user()
        .filter(|u| !u.is_empty())
        .ok_or(SessionError::NoUser)?
        .to_owned();
    let dbname = startup.database().unwrap_or(&user).to_owned();
    let console = crate::admin::is_console_database(&dbname);
    // As PgBouncer: max_client_conn does not apply to the admin console.
    let _slot = if console {
        None
    } else {
        Some(
            shared
                .client_slots
                .try_acquire()
                .ok_or(SessionError::TooManyClients)?,
        )
    };
    let span = tracing::Span::current();
    span.record("db", dbname.as_str());
    span.record("user", user.as_str());
    crate::metrics::oplog::login_attempt(&cfg.log, &dbname, &user, reader.get_ref().is_tls());
    // As PgBouncer: a client on the Unix socket is not asked for TLS.
    if cfg.client_tls.requires_tls() && !reader.get_ref().is_tls() && !client.peer.is_unix() {
        return Err(SessionError::TlsRequired {
            host: client.peer.host(),
            user,
            database: dbname,
        });
    }

    let on_tls = reader.get_ref().is_tls();
    // PgBouncer's rule: the OS user pgheal runs as logs into the console as user `pgbouncer`
    // over the Unix socket without a password, whatever auth_type and the HBA rules say.
    let info = ClientInfo {
        user: user.clone(),
        database: dbname.clone(),
        addr: client.peer,
        local_addr: client.local,
        application_name: application_name(&startup),
        tls: on_tls,
        admin: console,
    };
    let own_user_console =
        console && user == OWN_CONSOLE_USER && client.os_uid == Some(crate::net::unix::own_uid());
    if own_user_console {
        tracing::info!("admin console access from the Unix socket as pgheal's own OS user");
        return console_login(shared, writer, info, crate::admin::Role::Admin).await;
    }
    // The OS user's name (a look-up in the user database) only for the HBA rules' `peer`.
    let os_user = match client.os_uid {
        Some(uid) if cfg.hba.is_some() => crate::net::unix::user_name(uid),
        _ => None,
    };
    let transport = Transport {
        peer: client.peer,
        tls: on_tls,
        cert_common_name: client.client_cert_name.as_deref(),
        os_user: os_user.as_deref(),
    };
    let method = method_for(cfg, transport, &startup, &dbname, &user)?;
    // A user missing from the auth_file is looked up with the database's auth_query, if it
    // has an auth_user (the database is found before the password is checked, but its
    // existence is only told once the password is).
    let looked_up;
    let secret = match cfg.users.get(&user) {
        Some(s) => Some(s),
        None if !console => match cfg.database_for(&dbname, &user) {
            Some(db) if db.auth_user.is_some() => {
                looked_up = tokio::time::timeout_at(
                    client.deadline,
                    shared.pools.auth_query_secret(&db, &user),
                )
                .await
                .map_err(|_| SessionError::LoginTimeout)?
                .map_err(|e| SessionError::Pool(crate::pool::PoolError::Server(e)))?;
                looked_up.as_ref()
            }
            _ => None,
        },
        None => None,
    };
    if method == AuthMethod::Trust && secret.is_none() && !cfg.users.is_empty() {
        // Like PgBouncer: trust skips the password, not the user list.
        return Err(SessionError::UnknownUser(user));
    }
    let tls = TlsBinding {
        on_tls,
        end_point: client.end_point.as_deref(),
    };
    let max_len = reader.set_max_len(MAX_AUTH_MESSAGE_LEN);
    let authenticated = tokio::time::timeout_at(
        client.deadline,
        authenticate(method, &user, secret, tls, reader, writer),
    )
    .await;
    reader.set_max_len(max_len);
    let passthrough = authenticated.map_err(|_| SessionError::LoginTimeout)??;
    if console {
        let role = crate::admin::role_of(cfg, &user)
            .ok_or_else(|| SessionError::ConsoleNotAllowed(user.clone()))?;
        return console_login(shared, writer, info, role).await;
    }
    let db = cfg
        .database_for(&dbname, &user)
        .ok_or_else(|| SessionError::UnknownDatabase(dbname.clone()))?;
    if shared.pools.controls().database(&db.name).is_disabled() {
        return Err(SessionError::DatabaseDisabled(db.name.to_string()));
    }
    let _admitted = shared
        .pools
        .admit_client(cfg, &db, &user)
        .map_err(SessionError::ClientLimit)?;
    let mut settings = params::requested_settings(&startup)?;
    if cfg.servers.application_name_add_host {
        crate::config::servers::add_host_to_application_name(
            &mut settings,
            &client.peer.to_string(),
        );
    }

    let pool = shared.pools.pool_for(&db, &user, secret, passthrough);
    let in_pool = pool.stats.client();
    let registered = shared.clients.register(info);
    // Session pooling assigns the server connection at login and applies the settings there.
    // Transaction pooling answers the login without a server connection once the server has
    // accepted this combination of startup settings (see `params`), so a login rarely waits
    // behind other clients' transactions.
    let (checkout, client_settings, server_params) = match db.pool_mode {
        PoolMode::Session => {
            let mut checkout = pool.checkout().await?;
            if let Err(e) = params::apply(checkout.conn(), &settings).await {
                // A refused setting leaves the connection at ReadyForQuery; anything else
                // (a lost or silent server) leaves it in an unknown state.
                match e {
                    SessionError::ParamRejected(_) => checkout.checkin(TxStatus::Idle, true),
                    _ => checkout.discard(),
                }
                return Err(e);
            }
            let p = Arc::new(checkout.conn_ref().params.clone());
            (Some(checkout), ClientSettings::default(), p)
        }
        PoolMode::Transaction | PoolMode::Statement => {
            let accepted = match shared.startup_memo.get(&pool.key, &settings) {
                Some(a) => a,
                None => {
                    let mut checkout = pool.checkout().await?;
                    match params::validate(checkout.conn(), &settings, &pool.key.user).await {
                        Ok(Ok(a)) => {
                            checkout.checkin(TxStatus::Idle, true);
                            let a = Arc::new(a);
                            shared.startup_memo.insert(&pool.key, &settings, a.clone());
                            a
                        }
                        Ok(Err(refused)) => {
                            checkout.checkin(TxStatus::Idle, true);
                            return Err(SessionError::ParamRejected(refused));
                        }
                        Err(e) => {
                            checkout.discard();
                            return Err(e.into());
                        }
                    }
                }
            };
            (None, accepted.settings.clone(), accepted.reported.clone())
        }
    };
    let cancel_key = shared.cancels.register(startup.negotiated_minor());
    if let Some(c) = checkout.as_ref().map(|c| c.conn_ref()) {
        cancel_key.set_target(Some(CancelTarget {
            addr: c.addr,
            pid: c.backend_pid,
            key: c.backend_key,
        }));
    }
    writer.write_frame(&encode::auth_ok()).await?;
    let mut hello = Vec::new();
    for (k, v) in server_params.iter() {
        hello.push(encode::parameter_status(k, v).bytes);
    }
    hello.push(encode::backend_key_data(cancel_key.pid, cancel_key.key.as_bytes()).bytes);
    hello.push(encode::ready_for_query(TxStatus::Idle).bytes);
    writer.write_parts(&mut hello).await?;
    pool.stats.login();
    shared.metrics.client_connections.inc();
    let _gauge = ClientGauge(shared.metrics.clone());
    tracing::debug!(mode = ?db.pool_mode, "session started");

    let naming = match db.pool_mode {
        PoolMode::Session => Naming::Session,
        PoolMode::Transaction | PoolMode::Statement => Naming::Pooled {
            names: shared.pools.names_for(&pool.key),
            search_path: client_settings.statement_key(),
        },
    };
    Ok(Some(Login::Pooled(Box::new(LoggedIn {
        _slot,
        _admitted,
        _gauge,
        epoch: shared.pools.epoch_for(&db.name),
        pool,
        mode: db.pool_mode,
        naming,
        attached: checkout.map(Box::new),
        cancel_key,
        settings: client_settings,
        watch: SettingsWatch::with_startup(&settings),
        reported: Reported::new(server_params),
        registered,
        _in_pool: in_pool,
        statements: Vec::new(),
    }))))
}

/// The user name PgBouncer's own-OS-user console login uses.
const OWN_CONSOLE_USER: &str = "pgbouncer";

fn application_name(startup: &crate::protocol::startup::StartupParams) -> String {
    startup
        .params
        .iter()
        .find(|(k, _)| k == "application_name")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// An admin console login: the client listed, welcomed, and handed to the console.
async fn console_login(
    shared: &Shared,
    writer: &mut ClientWriter,
    info: ClientInfo,
    role: crate::admin::Role,
) -> Result<Option<Login>, SessionError> {
    let registered = shared.clients.register(info);
    crate::admin::welcome(writer, &registered.track).await?;
    Ok(Some(Login::Console(ConsoleLogin { role, registered })))
}

/// Decrements the client gauge when the session ends, however it ends.
pub(super) struct ClientGauge(pub(super) Arc<Metrics>);

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.0.client_connections.dec();
    }
}
