//! # plugboard-server
//!
//! The admin HTTP API of a Plugboard host (`plugboard serve`): it lists and calls events,
//! runs plugins' lifecycle operations, installs, rolls back and uninstalls packages, reads
//! the activity log and settings, streams every change as Server-Sent Events, exports
//! Prometheus metrics, serves the dashboard's static assets, and hosts a small demo
//! application whose sign-up form fires real events through the engine.
//!
//! ```no_run
//! use plugboard_server::{Server, ServerConfig};
//!
//! # async fn run(store: plugboard_store::Store, engine: plugboard_engine::Engine,
//! #              installer: plugboard_installer::Installer) -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::new(store, engine, plugboard_store::home()).installer(installer);
//! let server = Server::bind(config).await?;
//! if let Some(token) = server.first_token() {
//!     println!("admin token (shown once): {token}");
//! }
//! println!("listening on http://{}", server.local_addr());
//! server.run_until_signal().await?;
//! # Ok(()) }
//! ```
//!
//! **Auth.** Everything but `GET /health`, `/login` and the demo host (`/demo…`) needs the
//! admin token (`Authorization: Bearer …`) or a session cookie from `POST /login`. Only
//! the token's sha256 is kept (`<home>/admin-token.sha256`, mode 0600); a first start
//! creates one and [`Server::first_token`] shows it once; [`rotate_token`] replaces it.
//! A state-changing request authenticated by cookie must repeat the session's CSRF token
//! (`X-CSRF-Token`, or the form field `csrf`), which `GET /api/session` returns.
//!
//! **Errors** are always `{"error": {"code": "…", "message": "…"}}` with a stable code
//! (`bad_request`, `invalid_state`, `unauthorized`, `csrf`, `not_found`, `conflict`,
//! `too_large`, `refused`, `rate_limited`, `internal`); see [`ApiError`].
//!
//! **Blocking work** (engine calls and lifecycle operations, the installer, the store)
//! runs on tokio's blocking pool: sandboxed plugins run synchronously.
//!
//! The OpenAPI document of the JSON API is served at `GET /api/openapi.json` and built
//! from the handlers (`utoipa`).

mod accept;
mod api;
mod assets;
mod auth;
mod demo;
mod error;
mod kv;
mod metrics;
mod openapi;
#[cfg(feature = "packages")]
mod packages;
mod series;
mod stream;
mod views;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use plugboard_core::reference::{OnUserAfterSave, OnUserAfterSaveFailure};
use plugboard_engine::{Engine, Hook};
#[cfg(feature = "packages")]
use plugboard_installer::{Follow, Installer};
use plugboard_store::{ActivityLog, LogConfig, Store, Watch};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use auth::{SESSION_COOKIE, TOKEN_FILE, rotate_token};
pub use error::{ApiError, ServerError};
pub use openapi::openapi;
pub use stream::StreamEvent;

/// Tunables of the server; [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Where to listen (default `127.0.0.1:4000`; tests use port 0).
    pub addr: SocketAddr,
    /// Largest JSON (or form) body (default 1 MiB).
    pub json_limit: usize,
    /// Largest package upload (default 32 MiB).
    pub upload_limit: usize,
    /// How long a login session lasts (default 12 h).
    pub session_lifetime: Duration,
    /// Failed logins allowed per client address within [`ServerOptions::login_window`]
    /// (default 5); more get 429.
    pub login_attempts: u32,
    /// The window of the login rate limit (default 1 minute).
    pub login_window: Duration,
    /// Turn on per-plugin timing of every declared event at start, for `/api/profile` and
    /// `/metrics` (default on; it costs a clock read per plugin per call).
    pub profiling: bool,
    /// Follow other processes' changes to plugin records (`Store::watch`; default on).
    pub watch: bool,
    /// Apply other processes' package installs and settings at this interval
    /// (`Installer::follow`; default every 250 ms, so that a change applies within a
    /// second; `None`: off).
    pub follow: Option<Duration>,
    /// Check the package index (the `index` of the `installer` setting) for newer versions
    /// at this interval, and tell the dashboard (default every 10 minutes; `None`: off;
    /// nothing happens while no index is configured).
    pub index_poll: Option<Duration>,
    /// Sample every event's and plugin's counters at this interval for the dashboard's
    /// charts (`/api/series`: the last 150 intervals; default every 2 s; `None`: off).
    /// The latencies need profiling on.
    pub sample_every: Option<Duration>,
    /// Record every lifecycle event of the engine in the activity log (default off: a host
    /// usually attaches its own log to the engine, as the CLI's installer does).
    pub log_lifecycle: bool,
    /// Serve the demo host (`/demo`: a public sign-up form that fires the engine's
    /// `on_user_after_save_failure` and `on_user_after_save`). Off by default: it fires
    /// the embedder's real events without authentication; `plugboard serve` turns it on.
    pub demo: bool,
    /// At most this many connections at once; past it new ones are closed at once (and
    /// that is logged). Default 1024.
    pub max_connections: usize,
    /// A client must send a request's headers within this time, and a connection idle
    /// between requests is closed after it. Default 10 s.
    pub header_read_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000),
            json_limit: 1 << 20,
            upload_limit: 32 << 20,
            session_lifetime: Duration::from_secs(12 * 3600),
            login_attempts: 5,
            login_window: Duration::from_secs(60),
            profiling: true,
            watch: true,
            follow: Some(Duration::from_millis(250)),
            index_poll: Some(Duration::from_secs(600)),
            sample_every: Some(Duration::from_secs(2)),
            log_lifecycle: false,
            demo: false,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// What the server serves: the host's store, engine, installer (if it installs packages)
/// and its data directory.
pub struct ServerConfig {
    /// The store (records, activity, settings, packages).
    pub store: Store,
    /// The engine whose events and plugins are served.
    pub engine: Engine,
    /// The installer of that engine; without one, the package endpoints answer 404.
    #[cfg(feature = "packages")]
    pub installer: Option<Installer>,
    /// The data directory (`plugboard_store::home()`): where the admin token's hash lives.
    pub home: PathBuf,
    /// Tunables.
    pub options: ServerOptions,
}

impl ServerConfig {
    /// A configuration with default options and no installer (a native-only host).
    pub fn new(store: Store, engine: Engine, home: PathBuf) -> Self {
        ServerConfig {
            store,
            engine,
            #[cfg(feature = "packages")]
            installer: None,
            home,
            options: ServerOptions::default(),
        }
    }

    /// Serves the package endpoints with this installer (of the same engine and store),
    /// and follows other hosts' installs.
    #[cfg(feature = "packages")]
    pub fn installer(mut self, installer: Installer) -> Self {
        self.installer = Some(installer);
        self
    }

    /// Replaces the options.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }
}

/// Everything the handlers share.
pub(crate) struct AppState {
    pub(crate) store: Store,
    pub(crate) engine: Engine,
    #[cfg(feature = "packages")]
    pub(crate) installer: Option<Installer>,
    /// The key of the secret settings: the installer's, else `<home>/secrets.key`.
    #[cfg(feature = "packages")]
    pub(crate) secrets: plugboard_installer::secrets::Secrets,
    pub(crate) options: ServerOptions,
    pub(crate) token: auth::Token,
    pub(crate) sessions: auth::Sessions,
    pub(crate) limiter: auth::LoginLimiter,
    pub(crate) hub: stream::Hub,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) series: series::Series,
    pub(crate) log: ActivityLog,
    pub(crate) demo: demo::Demo,
    pub(crate) failure_hook: Hook<OnUserAfterSaveFailure>,
    pub(crate) save_hook: Hook<OnUserAfterSave>,
}

pub(crate) type Shared = Arc<AppState>;

/// Stops a running server gracefully (requests in flight finish). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Asks the server to stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(true);
    }
}

/// A bound admin server; [`Server::run`] serves it.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    state: Shared,
    first_token: Option<String>,
    shutdown_tx: Arc<watch::Sender<bool>>,
    shutdown_rx: watch::Receiver<bool>,
    watch: Option<Watch>,
    #[cfg(feature = "packages")]
    follow: Option<Follow>,
}

impl Server {
    /// Binds the address, loads (or creates) the admin token and starts following the
    /// engine's changes. Must be called within a tokio runtime.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let ServerConfig {
            store,
            engine,
            #[cfg(feature = "packages")]
            installer,
            home,
            options,
        } = config;
        #[cfg(feature = "packages")]
        let secrets = installer.as_ref().map_or_else(
            || {
                plugboard_installer::secrets::Secrets::new(plugboard_installer::secrets::key_file(
                    &home,
                ))
            },
            |i| i.secrets().clone(),
        );
        let (token_hash, first_token) = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || auth::load_or_create(&store, &home))
                .await
                .map_err(|e| ServerError::Random(format!("loading the admin token: {e}")))??
        };
        let listener =
            TcpListener::bind(options.addr)
                .await
                .map_err(|error| ServerError::Bind {
                    addr: options.addr.to_string(),
                    error,
                })?;
        let addr = listener.local_addr().map_err(|error| ServerError::Bind {
            addr: options.addr.to_string(),
            error,
        })?;
        if options.profiling {
            for event in engine.events() {
                if let Err(e) = engine.set_profiling(&event.name, true) {
                    tracing::warn!(event = %event.name, error = %e, "cannot turn profiling on");
                }
            }
        }
        let failure_hook = engine.hook::<OnUserAfterSaveFailure>()?;
        let save_hook = engine.hook::<OnUserAfterSave>()?;
        {
            // So that `plugboard events` in another process describes this host's own
            // events too; a host whose database refuses it still serves.
            let (store, engine) = (store.clone(), engine.clone());
            let published =
                tokio::task::spawn_blocking(move || store.publish_events(&engine)).await;
            if let Ok(Err(e)) = published {
                tracing::warn!(error = %e, "could not record this host's event catalogue");
            }
        }
        let log = store.activity_log(
            options.log_lifecycle.then_some(&engine),
            LogConfig::default(),
        );
        let watch = options.watch.then(|| store.watch(&engine));
        #[cfg(feature = "packages")]
        let follow = options
            .follow
            .zip(installer.as_ref())
            .map(|(every, installer)| installer.follow(every));
        let state = Arc::new(AppState {
            sessions: auth::Sessions::new(options.session_lifetime),
            limiter: auth::LoginLimiter::new(options.login_attempts, options.login_window),
            hub: stream::Hub::new(),
            metrics: metrics::Metrics::default(),
            series: series::Series::default(),
            demo: demo::Demo::default(),
            store,
            engine,
            #[cfg(feature = "packages")]
            installer,
            #[cfg(feature = "packages")]
            secrets,
            options,
            token: auth::Token::new(token_hash),
            log,
            failure_hook,
            save_hook,
        });
        let (tx, rx) = watch::channel(false);
        Ok(Server {
            listener,
            addr,
            state,
            first_token,
            shutdown_tx: Arc::new(tx),
            shutdown_rx: rx,
            watch,
            #[cfg(feature = "packages")]
            follow,
        })
    }

    /// The address bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token, when this start created it (show it once; only its hash is kept).
    pub fn first_token(&self) -> Option<&str> {
        self.first_token.as_deref()
    }

    /// A handle that stops [`Server::run`] gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            tx: self.shutdown_tx.clone(),
        }
    }

    /// The routes, for embedding the admin API in another axum application.
    pub fn router(&self) -> Router {
        routes(self.state.clone())
    }

    /// Serves until the [`ShutdownHandle`] is used.
    pub async fn run(self) -> Result<(), ServerError> {
        self.serve(std::future::pending()).await
    }

    /// Serves until the handle is used, Ctrl-C, or (on Unix) SIGTERM.
    pub async fn run_until_signal(self) -> Result<(), ServerError> {
        self.serve(signal()).await
    }

    async fn serve(
        self,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            addr,
            state,
            mut shutdown_rx,
            watch,
            #[cfg(feature = "packages")]
            follow,
            ..
        } = self;
        let forwarder = tokio::spawn(stream::forward(state.clone()));
        #[cfg(feature = "packages")]
        let poller = state
            .options
            .index_poll
            .filter(|_| state.installer.is_some())
            .map(|every| tokio::spawn(stream::poll_index(state.clone(), every)));
        #[cfg(not(feature = "packages"))]
        let poller: Option<tokio::task::JoinHandle<()>> = None;
        let token_follower = tokio::spawn(follow_token(state.clone()));
        let activity_follower = tokio::spawn(stream::follow_activity(state.clone()));
        let sampler = state
            .options
            .sample_every
            .filter(|every| !every.is_zero())
            .map(|every| tokio::spawn(series::run(state.clone(), every)));
        let app = routes(state.clone());
        tracing::info!(%addr, "admin server listening");
        let stop = async move {
            tokio::select! {
                _ = shutdown_rx.wait_for(|stop| *stop) => {}
                () = signal => {}
            }
            tracing::info!("admin server stopping");
        };
        accept::serve(
            listener,
            app,
            state.options.max_connections,
            state.options.header_read_timeout,
            stop,
        )
        .await;
        let result = Ok(());
        forwarder.abort();
        token_follower.abort();
        activity_follower.abort();
        if let Some(s) = sampler {
            s.abort();
        }
        if let Some(p) = poller {
            p.abort();
        }
        drop(watch);
        // Stopping the follower joins its thread: off the async workers.
        #[cfg(feature = "packages")]
        let _ = tokio::task::spawn_blocking(move || drop(follow)).await;
        let log_state = state.clone();
        let _ =
            tokio::task::spawn_blocking(move || log_state.log.flush(Duration::from_secs(5))).await;
        result
    }
}

/// Follows the admin token in the database: a rotation (by `plugboard token rotate` or
/// another server) revokes the old token, every session and every event stream here
/// within a second.
async fn follow_token(state: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = None;
    loop {
        tick.tick().await;
        let s = state.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let generation = s.store.generation()?;
            if Some(generation) == seen {
                return Ok::<_, ServerError>(seen);
            }
            if s.token.refresh(&s.store)? {
                s.sessions.clear();
                tracing::warn!(
                    "the admin token was rotated: the old token, its sessions and their event streams are revoked"
                );
            }
            Ok(Some(generation))
        })
        .await;
        match checked {
            Ok(Ok(g)) => seen = g,
            // The store logs an outage once; this would say so four times a second.
            Ok(Err(ServerError::Store(e))) if e.is_unavailable() => {
                tracing::debug!(error = %e, "cannot read the admin token; retrying")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the admin token; retrying"),
            Err(e) => tracing::warn!(error = %e, "admin token check failed; retrying"),
        }
    }
}

async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Every route, with auth, body limits and JSON errors.
fn routes(state: Shared) -> Router {
    let json_limit = state.options.json_limit;
    let protected = api::routes(&state).merge(metrics::routes()).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), api::require_auth),
    );
    let demo = if state.options.demo {
        demo::routes()
    } else {
        Router::new()
    };
    Router::new()
        .merge(protected)
        .merge(assets::routes())
        .merge(demo)
        .merge(api::public_routes())
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::map_response(api::json_errors))
        .layer(axum::middleware::from_fn(api::refuse_nul))
        .layer(axum::middleware::map_response(api::security_headers))
        .layer(axum::middleware::from_fn(api::log_request))
        .with_state(state)
}
