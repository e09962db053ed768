//! The HTTP/1.1 layer (hyper on tokio): routing, bearer-token checks, body
//! limits, metrics, and turning every outcome into a JSON response.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::api::{self, ApiError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::tenant::Tenant;
use crate::{Error, Result};

/// The OpenAPI description shipped with the server (also at GET /openapi.yaml).
pub const OPENAPI: &str = include_str!("../openapi.yaml");

pub struct App {
    pub cfg: Config,
    token: String,
    pub tenants: BTreeMap<String, Tenant>,
    pub metrics: Metrics,
    /// Set when the server starts stopping: readiness then says 503, so a
    /// load balancer stops sending before the listener closes (after
    /// `drain_delay_ms`).
    stopping: AtomicBool,
    /// Numbers requests that bring no `x-request-id`.
    next_id: AtomicU64,
    /// Batches computed at once (one per worker thread).
    batch_slots: tokio::sync::Semaphore,
}

/// A running server; `stop` ends it gracefully (no new connections; the
/// requests in flight finish, for up to `shutdown_grace_ms`, which `stop`
/// blocks for), `wait` blocks until it ends.
pub struct Server {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C), caught from the moment this is made
/// instead of ending the process. The handlers stay for the process's
/// life (signal-hook cannot put the default action back), so after the
/// first signal a second one ends the process at once.
pub struct StopSignals(signal_hook::iterator::Signals);

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .map(StopSignals)
            .map_err(|e| Error::Invalid(format!("installing the signal handlers: {e}")))
    }

    /// Blocks until a signal arrives, then stops `server` gracefully
    /// (see [`Server::stop`]: up to `shutdown_grace_ms`); returns the
    /// signal's name. A second signal during the stop exits with 130.
    pub fn stop_on_signal(self, server: Server) -> &'static str {
        let mut signals = self.0;
        let name = match signals.forever().next() {
            Some(signal_hook::consts::SIGINT) => "SIGINT",
            Some(_) => "SIGTERM",
            // The iterator ended (its handle was closed): stop as asked.
            None => "close",
        };
        eprintln!("recforge-serve: {name}: no new connections, finishing the requests in flight");
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                eprintln!("recforge-serve: second signal: exiting without waiting");
                std::process::exit(130);
            }
        });
        server.stop();
        name
    }
}

/// Loads every tenant's bundles, binds the port and serves on a
/// background thread. Everything that can fail at startup fails here.
pub fn start(cfg: Config) -> Result<Server> {
    let token = cfg.token()?;
    let mut tenants = BTreeMap::new();
    for (name, t) in &cfg.tenants {
        let tenant = Tenant::load(name, t, &cfg)
            .map_err(|e| Error::Invalid(format!("tenant `{name}`: {e}")))?;
        tenants.insert(name.clone(), tenant);
    }
    let workers = cfg
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|e| Error::Invalid(format!("starting the runtime: {e}")))?;
    let bind = format!("{}:{}", cfg.bind, cfg.port);
    let listener = rt
        .block_on(TcpListener::bind(&bind))
        .map_err(|source| Error::Io {
            path: bind.clone().into(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        path: bind.into(),
        source,
    })?;
    let app = Arc::new(App {
        cfg,
        token,
        tenants,
        metrics: Metrics::default(),
        stopping: AtomicBool::new(false),
        next_id: AtomicU64::new(1),
        batch_slots: tokio::sync::Semaphore::new(workers.max(1)),
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    let served = app.clone();
    let thread = std::thread::spawn(move || rt.block_on(serve(listener, served, rx)));
    Ok(Server {
        addr,
        app,
        shutdown: tx,
        thread: Some(thread),
    })
}

/// What the accept loop waits for.
enum Event {
    Connection(std::io::Result<(tokio::net::TcpStream, SocketAddr)>),
    Stop,
}

/// Accepts and serves connections until `stop` changes (or its sender is
/// dropped); then stops accepting, lets the requests in flight finish (up
/// to `shutdown_grace_ms`) and returns.
async fn serve(listener: TcpListener, app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let header_timeout = Duration::from_millis(app.cfg.header_timeout_ms);
    let drain = Duration::from_millis(app.cfg.drain_delay_ms);
    let flag = app.clone();
    // On the stop: readiness says 503 at once; connections are still
    // accepted for the drain delay, while load balancers take the server
    // out of rotation, then the listener closes.
    let mut stopped = std::pin::pin!(async move {
        let _ = stop.changed().await;
        flag.stopping.store(true, Ordering::SeqCst);
        if !drain.is_zero() {
            tokio::time::sleep(drain).await;
        }
    });
    loop {
        // Waits for a connection or the stop, whichever comes first
        // (tokio's `select!` needs a tokio feature polars does not build).
        // The stop is looked at first, so a flood of connections cannot
        // starve it, and an accepted stream is never dropped unserved.
        let event = std::future::poll_fn(|cx| {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Stop);
            }
            listener.poll_accept(cx).map(Event::Connection)
        })
        .await;
        match event {
            Event::Stop => break,
            Event::Connection(Ok((stream, _))) => {
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| handle(app.clone(), req));
                // A client that trickles its headers (or sits idle on a
                // kept-alive connection) is closed after the header timeout.
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                // A client that hangs up mid-request is its own problem.
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            Event::Connection(Err(e)) => {
                // E.g. out of file descriptors: wait, keep serving.
                eprintln!("recforge-serve: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Closing the listener releases the port: new connections are refused
    // (and any still in the kernel's backlog reset) instead of queueing
    // behind a server that will not accept them. A connection accepted but
    // not yet read from is closed without an answer, as hyper does.
    drop(listener);
    let grace = Duration::from_millis(app.cfg.shutdown_grace_ms);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "recforge-serve: requests still in flight after {} ms; stopping anyway",
            app.cfg.shutdown_grace_ms
        );
    }
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    r
}

fn text_response(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("static header"));
    r
}

fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = json_response(e.status, &e.body());
    if e.status == 401 {
        r.headers_mut()
            .insert("www-authenticate", "Bearer".parse().expect("static header"));
    }
    r
}

/// Equal-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let start = Instant::now();
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| format!("r{}", app.next_id.fetch_add(1, Ordering::Relaxed)));
    // Only a request that will be logged pays for copying these.
    let logged = app
        .cfg
        .access_log
        .logs(&id)
        .then(|| (req.method().clone(), req.uri().path().to_string()));
    let (tenant, route, resp) = dispatch(&app, req).await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            let mut r = error_response(&e);
            // Most errors (401, 404, 405, 413) answer before the request
            // body is read; hyper then drops the connection, and a client
            // that pooled it fails its next request on a closed socket.
            // Saying so lets it open a fresh one.
            r.headers_mut()
                .insert("connection", "close".parse().expect("static header"));
            r
        }
    };
    let mut resp = resp;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let variant = resp.extensions().get::<Variant>().map_or("", |v| v.0);
    let seconds = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    app.metrics.record(&tenant, variant, route, status, seconds);
    if let Some((method, path)) = logged {
        // One JSON line per request on stderr, for the log shipper.
        eprintln!(
            "{}",
            json!({
                "request_id": id,
                "method": method.as_str(),
                "path": path,
                "tenant": tenant,
                "route": route,
                "variant": variant,
                "status": status,
                "ms": (seconds * 1e6).round() / 1e3,
            })
        );
    }
    Ok(resp)
}

type Routed = (
    String,
    &'static str,
    std::result::Result<Response<Full<Bytes>>, ApiError>,
);

async fn dispatch(app: &Arc<App>, req: Request<Incoming>) -> Routed {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    let want = |m: Method| -> std::result::Result<(), ApiError> {
        if method == m {
            Ok(())
        } else {
            Err(ApiError::new(
                405,
                "method_not_allowed",
                format!("{path} takes {m}"),
            ))
        }
    };
    match parts.as_slice() {
        ["healthz"] => (
            String::new(),
            "healthz",
            want(Method::GET).map(|_| {
                json_response(
                    200,
                    &json!({"status": "ok", "tenants": app.tenants.keys().collect::<Vec<_>>()}),
                )
            }),
        ),
        ["readyz"] => (
            String::new(),
            "readyz",
            want(Method::GET).and_then(|_| {
                if app.stopping.load(Ordering::SeqCst) {
                    Err(ApiError::new(
                        503,
                        "stopping",
                        "the server is shutting down",
                    ))
                } else {
                    Ok(json_response(200, &json!({"status": "ready"})))
                }
            }),
        ),
        ["metrics"] => (
            String::new(),
            "metrics",
            want(Method::GET).map(|_| {
                text_response(
                    app.metrics.render(app.tenants.values()),
                    "text/plain; version=0.0.4",
                )
            }),
        ),
        ["openapi.yaml"] => (
            String::new(),
            "openapi",
            want(Method::GET).map(|_| text_response(OPENAPI.to_string(), "application/yaml")),
        ),
        ["v1", tenant, rest @ ..] => {
            let route: &'static str = match rest {
                ["recommend"] => "recommend",
                ["recommend", "batch"] => "recommend_batch",
                ["items"] => "items",
                ["items", "availability"] => "availability",
                ["reload"] => "reload",
                ["events"] => "events",
                ["attribution"] => "attribution",
                _ => {
                    return (
                        String::new(),
                        "unknown",
                        Err(ApiError::new(404, "no_route", format!("no route {path}"))),
                    );
                }
            };
            let Some(t) = app.tenants.get(*tenant) else {
                return (
                    String::new(),
                    route,
                    Err(ApiError::new(
                        404,
                        "unknown_tenant",
                        format!("no tenant `{tenant}`"),
                    )),
                );
            };
            let label = t.name.clone();
            let out = tenant_route(app, &label, route, method, req).await;
            (label, route, out)
        }
        _ => (
            String::new(),
            "unknown",
            Err(ApiError::new(404, "no_route", format!("no route {path}"))),
        ),
    }
}

async fn tenant_route(
    app: &Arc<App>,
    tenant: &str,
    route: &'static str,
    method: Method,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, ApiError> {
    let takes = if route == "attribution" {
        Method::GET
    } else {
        Method::POST
    };
    if method != takes {
        return Err(ApiError::new(
            405,
            "method_not_allowed",
            format!("{route} takes {takes}"),
        ));
    }
    if route != "recommend" && route != "recommend_batch" {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), app.token.as_bytes()) {
            return Err(ApiError::new(
                401,
                "unauthorized",
                "admin routes need `Authorization: Bearer <token>`",
            ));
        }
    }
    let body_timeout = Duration::from_millis(app.cfg.body_timeout_ms);
    if route == "recommend" || route == "recommend_batch" {
        // A recommendation has no side effect, so a late one is simply
        // abandoned. Its arithmetic (about a millisecond) never yields, so
        // in practice the deadline bounds the wait for its body.
        let deadline = Duration::from_millis(app.cfg.request_timeout_ms);
        let abandoned = Arc::new(AtomicBool::new(false));
        let flag = abandoned.clone();
        let answer = async {
            let body = read_body(req, app.cfg.max_body_bytes, body_timeout).await?;
            let t = &app.tenants[tenant];
            if route == "recommend" {
                guarded(|| api::recommend(t, app.cfg.max_k, &body))
            } else {
                // A batch is a thousand recommendations' work: off the
                // request workers, so single requests keep their latency,
                // and at most one per worker at a time.
                let _slot =
                    app.batch_slots.acquire().await.map_err(|_| {
                        ApiError::new(503, "stopping", "the server is shutting down")
                    })?;
                let app2 = app.clone();
                let tenant = tenant.to_string();
                tokio::task::spawn_blocking(move || {
                    let t = &app2.tenants[&tenant];
                    guarded(|| api::recommend_batch(t, app2.cfg.max_k, &body, &flag))
                })
                .await
                .map_err(|_| ApiError::new(500, "internal", "the batch task failed"))?
            }
        };
        let value = tokio::time::timeout(deadline, answer).await.map_err(|_| {
            // A batch still running stops at its next request.
            abandoned.store(true, Ordering::Relaxed);
            ApiError::new(
                503,
                "deadline",
                format!(
                    "no answer within {} ms of the request's headers",
                    app.cfg.request_timeout_ms
                ),
            )
        })??;
        return Ok(with_variant(json_response(200, &value), &value));
    }
    if route == "attribution" {
        let t = &app.tenants[tenant];
        return guarded(|| api::attribution(t)).map(|v| json_response(200, &v));
    }
    let body = read_body(req, app.cfg.max_body_bytes, body_timeout).await?;
    let app2 = app.clone();
    let tenant = tenant.to_string();
    // Updates copy the pool, reloads read a bundle from disk and every
    // change waits for the journal's fsync: off the request workers. They are always awaited, with no deadline, so the
    // answer says what was applied.
    let value = tokio::task::spawn_blocking(move || {
        let t = &app2.tenants[&tenant];
        guarded(|| match route {
            "items" => api::items(t, &body),
            "availability" => api::availability(t, &body),
            "events" => api::events(t, &body),
            _ => api::reload(t, &body),
        })
    })
    .await
    .map_err(|_| ApiError::new(500, "internal", "the update task failed"))??;
    Ok(json_response(200, &value))
}

/// `work`, with a panic turned into a 500: a bug must cost one request,
/// never the server.
fn guarded(
    work: impl FnOnce() -> std::result::Result<Value, ApiError>,
) -> std::result::Result<Value, ApiError> {
    std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
        Err(ApiError::new(
            500,
            "internal",
            "the request failed inside the server; it keeps serving",
        ))
    })
}

/// `resp` marked with the A/B variant `value` says answered, for the
/// metrics (not sent to the client: the body already says it).
fn with_variant(mut resp: Response<Full<Bytes>>, value: &Value) -> Response<Full<Bytes>> {
    if let Some(v) = variant_label(value) {
        resp.extensions_mut().insert(Variant(v));
    }
    resp
}

/// The A/B variant a recommendation's answer names, as a static label.
pub(crate) fn variant_label(value: &Value) -> Option<&'static str> {
    match value.get("variant").and_then(Value::as_str) {
        Some("a") => Some("a"),
        Some("b") => Some("b"),
        _ => None,
    }
}
/// The A/B variant that answered a request.
#[derive(Clone, Copy)]
struct Variant(&'static str);

async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: Duration,
) -> std::result::Result<Bytes, ApiError> {
    let too_big = || {
        ApiError::new(
            413,
            "body_too_large",
            format!("the request body exceeds {max} bytes"),
        )
    };
    if let Some(len) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return Err(too_big());
    }
    let body = tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                408,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
        })?;
    match body {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_big())
        }
        Err(e) => Err(ApiError::new(
            400,
            "bad_body",
            format!("reading the request body: {e}"),
        )),
    }
}
